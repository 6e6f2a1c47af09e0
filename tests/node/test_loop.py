"""The whole loop in real pods: train, serve, capture, monitor, retrain and roll, as a user would run it.

Every pod is the operator's, run by runc on the real node in a namespace that enforces Pod Security
"restricted": two training workers that meet over their headless Service's DNS name; Triton with
its model agent and capture converter as native sidecars; the drift monitor reading the captures
from their claim; a retraining TrainingJob the monitor's drift created. Client pods send requests
through the Service, as an application would, and count what failed, also while the Deployment
rolls to the version the retraining exported.
"""

from __future__ import annotations

import json
import re
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scaleml_api.profile import DataProfile
from scaleml_api.repository import PROFILE_FILE
from scaleml_api.runtime import REPORT_PORT
from tests.node.conftest import (
    TRAINING_CLAIMS,
    churn_claims,
    churn_training_job,
    finished,
    pod_finished,
    pod_logs,
    restricted_pod,
    run_to_end,
)
from tests.node.traffic import BATCH, apply_traffic, churn_inputs, client_pod, client_result, model_deployment, served
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.node.config import NODE_NAME
from tests.support.node.node import RealNode
from tests.support.polling import wait_for
from tests.workloads.serving import expected_outputs

pytestmark = pytest.mark.node

#: Rows per window the monitor tests.
WINDOW = 300
#: The capture converter completes a file when its first row is a minute old: the calm client sends
#: a little longer, so that a window of calm traffic only is on the claim before the shift begins.
CALM_SECONDS = 65


def _drift_monitor() -> dict[str, Any]:
    """The example DriftMonitor, checking a small window often and retraining on the first drifted one."""
    # One worker: the node's two cores also run Triton and the monitor meanwhile.
    overrides = {"resources": {"workers": 1}}
    return merged(
        example("DriftMonitor"),
        {
            "spec": {
                "window": {"size": WINDOW, "every": "10s"},
                "retrain": {"enabled": True, "after": 1, "cooldown": "1h", "trainingJobOverrides": overrides},
            }
        },
    )


def _monitor(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = kubectl.get("driftmonitor", "churn", namespace).get("status", {})
    return status


def _checked(kubectl: Kubectl, namespace: str, drift: bool) -> dict[str, Any] | None:
    """The monitor's status once its last window drifted (or did not) as `drift` says."""
    status = _monitor(kubectl, namespace)
    return status if "lastCheckTime" in status and status.get("driftDetected") is drift else None


def _monitored(kubectl: Kubectl, namespace: str, captures: Path, drift: bool, timeout: float) -> dict[str, Any]:
    """The monitor's status once a window drifted (or did not) as `drift` says; on timeout, what the
    monitor, the capture converter and the claim show, to tell which of them fell behind."""
    try:
        return wait_for(
            partial(_checked, kubectl, namespace, drift), timeout, f"a window {'with' if drift else 'without'} drift"
        )
    except AssertionError as error:
        pods = kubectl.run("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
        running = ("get", "pods", "-n", namespace, "--field-selector=status.phase=Running", "-o", "name")
        logs = {
            name: kubectl.run("logs", name, "-n", namespace, "--all-containers", "--tail=30", check=False).stdout
            for name in kubectl.run(*running, check=False).stdout.split()
        }
        files = []
        for path in captures.rglob("*"):
            # The converter renames and the retention deletes files meanwhile.
            with suppress(OSError):
                files.append(f"{path.relative_to(captures)} {path.stat().st_size}")
        status = _monitor(kubectl, namespace)
        raise AssertionError(f"{error}\nstatus: {status}\npods:\n{pods}\ncaptures: {files}\nlogs: {logs}") from None


def _retrain_jobs(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    """The TrainingJobs the monitor created."""
    selector = "scaleml.dev/retrained-by=churn"
    jobs = json.loads(kubectl.run("get", "trainingjobs", "-n", namespace, "-l", selector, "-o", "json").stdout)
    found: list[dict[str, Any]] = jobs["items"]
    return found


def _retraining(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    """The TrainingJob the monitor created, once it ended."""
    ended = [
        job
        for job in _retrain_jobs(kubectl, namespace)
        if job.get("status", {}).get("phase") in ("Succeeded", "Failed")
    ]
    return ended[0] if ended else None


def test_train_serve_monitor_retrain_and_roll_in_real_pods(
    real_node: RealNode, workload_image: str, kubectl: Kubectl, ml_namespace: str
) -> None:
    namespace = ml_namespace
    volumes = churn_claims(kubectl, real_node, namespace, 2000, (*TRAINING_CLAIMS, "captures"))

    # 1. Two workers meet at worker 0's DNS name, train with gloo, checkpoint and export version 1.
    kubectl.apply(churn_training_job(), "-n", namespace)
    trained = wait_for(partial(finished, kubectl, namespace), 300, "the TrainingJob to finish")
    pods = json.loads(kubectl.run("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    logs = pod_logs(kubectl, namespace)
    assert trained["status"]["phase"] == "Succeeded", (trained["status"], logs)
    assert trained["status"]["modelVersion"] == 1
    assert sorted(pod["spec"]["nodeName"] for pod in pods) == [NODE_NAME, NODE_NAME]
    assert all(pod["status"]["phase"] == "Succeeded" for pod in pods)
    # Each worker is one rank of two, and they ended in agreement (`kubectl logs` shows the training log).
    assert sorted(" of 2 on cpu" in log for log in logs.values()) == [True, True], logs
    assert any("all 2 ranks finished with the same parameters" in log for log in logs.values()), logs
    # Rank 0 reported its progress from inside its pod, as its ServiceAccount.
    progress = trained["status"]["progress"]
    assert progress["step"] == progress["totalSteps"] > 0
    assert progress["epoch"] == 2
    assert kubectl.await_event_reasons(namespace, "TrainingJob", {"TrainingStarted", "TrainingSucceeded"})
    checkpoints = [path for path in volumes["checkpoints"].rglob("*") if path.is_file()]
    assert checkpoints, "no checkpoint written"
    # Written by the pods' user, through the group the kubelet gave the claim (fsGroup).
    assert {path.stat().st_uid for path in checkpoints} == {1000}

    # 2. Triton serves version 1 behind the Service, capturing every request; the monitor watches.
    capture = {"enabled": True, "sampleRate": 1.0, "volumeClaim": "captures"}
    kubectl.apply(model_deployment(capture=capture), "-n", namespace)
    ready = wait_for(partial(served, kubectl, namespace, 1), 300, "version 1 to be served")
    # The monitor only once Triton's pod mounted the capture claim: the kubelet gives a local volume to
    # the pod's fsGroup at its first mount on the node only, and the monitor mounts it read-only, which
    # gives it to no group (the converter then cannot write: "Permission denied").
    kubectl.apply(_drift_monitor(), "-n", namespace)
    assert ready["readyReplicas"] == 1

    version_1 = volumes["models"] / "churn" / "1"
    profile = DataProfile.model_validate_json((version_1 / PROFILE_FILE).read_text())
    calm, shifted = churn_inputs(profile, seed=11), churn_inputs(profile, seed=12, shift=3.0)
    apply_traffic(kubectl, namespace, {"calm.json": calm, "shifted.json": shifted})

    calm_client = client_pod("calm", namespace, workload_image, "calm.json", duration=CALM_SECONDS, limit=120)
    answered = client_result(kubectl, namespace, run_to_end(kubectl, namespace, calm_client, 180))
    assert answered["failures"] == 0, answered
    assert set(answered["versions"]) == {"1"}, answered
    [output] = answered["first"]
    assert output["name"] == "OUTPUT__0"
    got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, expected_outputs(version_1, calm[:BATCH]), rtol=1e-5, atol=1e-6)

    # 3. The monitor reads the calm captures from their claim and sees no drift.
    calm_window = _monitored(kubectl, namespace, volumes["captures"], False, 240)
    assert calm_window["windowSize"] == WINDOW, calm_window
    assert calm_window["consecutiveDriftedWindows"] == 0
    assert _retrain_jobs(kubectl, namespace) == []

    # 4. Traffic shifts while a client keeps sending: drift, a retraining TrainingJob, version 2, a rollout.
    steady_client = client_pod("steady", namespace, workload_image, "shifted.json", until="2", settle=15, limit=900)
    kubectl.apply(steady_client, "-n", namespace)
    drifted = _monitored(kubectl, namespace, volumes["captures"], True, 240)
    assert "a" in drifted["driftedFeatures"], drifted
    assert kubectl.await_event_reasons(namespace, "DriftMonitor", {"DriftDetected"})

    # The HTML report, fetched through the monitor's Service from inside the cluster.
    report_url = f"http://churn-monitor.{namespace}.svc:{REPORT_PORT}/"
    fetched = run_to_end(kubectl, namespace, restricted_pod("report", f"wget -q -O - {report_url}"), 60)
    page = kubectl.run("logs", "report", "-n", namespace).stdout
    assert fetched["status"]["phase"] == "Succeeded", page
    assert f"{namespace}/churn" in page
    # The window it shows (the newest: the monitor may have checked another since) drifted in `a`.
    assert re.search(r'<figure id="feature-a"><figcaption><b>a</b> \([^)]*\) <span class="drift">drifted', page), page

    retrained = wait_for(partial(_retraining, kubectl, namespace), 300, "the retraining TrainingJob to finish")
    assert retrained["status"]["phase"] == "Succeeded", (retrained["status"], pod_logs(kubectl, namespace))
    assert retrained["status"]["modelVersion"] == 2
    assert retrained["metadata"]["labels"]["scaleml.dev/retrain-of"] == "churn"
    monitor = _monitor(kubectl, namespace)
    assert (monitor["retrainsTriggered"], monitor["lastRetrainJob"]) == (1, retrained["metadata"]["name"])
    assert kubectl.await_event_reasons(namespace, "DriftMonitor", {"RetrainTriggered"})

    wait_for(partial(served, kubectl, namespace, 2), 300, "version 2 to be served")
    steady_pod = wait_for(partial(pod_finished, kubectl, namespace, "steady"), 120, "the steady client to finish")
    counted = client_result(kubectl, namespace, steady_pod)
    # Through the drift, the retraining and the rollout, every request was answered: by version 1
    # until version 2 took over.
    assert counted["failures"] == 0, counted
    assert set(counted["versions"]) == {"1", "2"}, counted
    # The monitor now compares with the training data of the version served.
    wait_for(lambda: _monitor(kubectl, namespace).get("referenceVersion") == 2, 120, "reference version 2")
