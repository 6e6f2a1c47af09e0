"""DriftMonitor on a cluster with controllers and KWOK nodes, the operator as its ServiceAccount.

The monitor's pod runs no code under KWOK: the tests write its drift results the way it does, as
its ServiceAccount, and check what the operator makes of them. The workload tests run the monitor.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.scenario import condition, export, model_deployment, patch_status, status, training_job
from tests.support.access import can
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

MONITOR_ACCOUNT = "churn-monitor"


def drift_monitor(**changes: Any) -> dict[str, Any]:
    return merged(example("DriftMonitor"), {"spec": changes})


def serving(kubectl: Kubectl, namespace: str, **monitor: Any) -> None:
    """A TrainingJob with version 1, a ModelDeployment capturing its traffic, and the DriftMonitor."""
    training_job(kubectl, namespace)
    export(kubectl, namespace, 1)
    kubectl.apply(model_deployment(autoscaling=None), "-n", namespace)
    kubectl.apply(drift_monitor(**monitor), "-n", namespace)


def drifted(kubectl: Kubectl, namespace: str, windows: int, since: str) -> None:
    """The monitor's report of a window that drifted, `windows` in a row since `since`."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results = {
        "lastCheckTime": now,
        "driftDetected": True,
        "driftScore": 0.6,
        "driftedFeatures": ["a", "c", "plan"],
        "windowSize": 5000,
        "consecutiveDriftedWindows": windows,
        "driftSince": since,
    }
    patch_status(kubectl, "driftmonitor", "churn", namespace, results, MONITOR_ACCOUNT)


def _monitor_run(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """The MonitorRun the monitor pod reads (its ConfigMap's file)."""
    run: dict[str, Any] = json.loads(kubectl.get("configmap", "churn-monitor", namespace)["data"]["run.json"])
    return run


def retrain_jobs(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    out = kubectl.run("get", "trainingjobs", "-n", namespace, "-l", "scaleml.dev/retrained-by=churn", "-o", "json")
    jobs: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return jobs


def _monitor(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return status(kubectl, "driftmonitor", "churn", namespace)


def test_the_monitor_gets_its_children_and_reads_the_served_versions_profile(
    kubectl: Kubectl, ml_namespace: str
) -> None:
    serving(kubectl, ml_namespace)

    ready = wait_for(lambda: condition(_monitor(kubectl, ml_namespace), "Ready").get("status") == "True", 90)
    assert ready
    monitor = _monitor(kubectl, ml_namespace)
    assert monitor["referenceVersion"] == 1
    # Written by the reconcile, and kept by every status refresh the Deployment's events cause since.
    assert condition(monitor, "Accepted")["status"] == "True"
    deployment = kubectl.get("deployment", "churn-monitor", ml_namespace)
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The run config is a file from a ConfigMap of the monitor's own, named on the command line.
    assert container["command"][-2:] == ["--config", "/etc/scaleml/run.json"]
    assert [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v] == ["churn-monitor"]
    run = _monitor_run(kubectl, ml_namespace)
    assert run["profilePath"] == "/reference/churn/1/profile.json"
    # It reads where its target's converters write, the target's own directory on a claim others may share.
    serving_pod = kubectl.get("deployment", "churn-triton", ml_namespace)["spec"]["template"]["spec"]
    assert f"--directory={run['capturesDir']}" in serving_pod["initContainers"][1]["command"]
    assert (run["capturesDir"], run["modelName"], run["legacyCapturesDir"]) == ("/captures/churn", "churn", "/captures")
    rolled_from = deployment["spec"]["template"]["metadata"]["annotations"]["scaleml.dev/config-hash"]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {
        "captures": {"claimName": "captures", "readOnly": True},
        "reference": {"claimName": "models", "readOnly": True},
    }
    assert pod["serviceAccountName"] == MONITOR_ACCOUNT
    service = kubectl.get("service", "churn-monitor", ml_namespace)
    assert {p["name"] for p in service["spec"]["ports"]} == {"metrics", "report"}

    # The monitor may report on this DriftMonitor (and, as test_tenancy.py shows, on no other), and read no Secret.
    account = f"system:serviceaccount:{ml_namespace}:{MONITOR_ACCOUNT}"
    assert can(kubectl, account, "patch", "driftmonitors.scaleml.dev", "status", ml_namespace, "churn")
    assert not can(kubectl, account, "get", "secrets", "", ml_namespace, "")

    # The served model moves to version 2: the monitor compares with version 2's training data.
    export(kubectl, ml_namespace, 2)
    wait_for(lambda: _monitor(kubectl, ml_namespace).get("referenceVersion") == 2, 120, "reference version 2")
    assert _monitor_run(kubectl, ml_namespace)["profilePath"] == "/reference/churn/2/profile.json"
    # A new config is a new pod template: the monitor restarts on it.
    template = kubectl.get("deployment", "churn-monitor", ml_namespace)["spec"]["template"]
    assert template["metadata"]["annotations"]["scaleml.dev/config-hash"] != rolled_from


def test_a_monitor_without_captured_traffic_waits_and_says_why(kubectl: Kubectl, ml_namespace: str) -> None:
    training_job(kubectl, ml_namespace)
    export(kubectl, ml_namespace, 1)
    kubectl.apply(model_deployment(autoscaling=None, capture={"enabled": False}), "-n", ml_namespace)
    kubectl.apply(drift_monitor(), "-n", ml_namespace)

    waiting = wait_for(
        lambda: condition(_monitor(kubectl, ml_namespace), "Ready").get("reason") == "CaptureDisabled", 60
    )
    assert waiting
    assert kubectl.find("deployment", "churn-monitor", ml_namespace) is None


def test_persistent_drift_creates_exactly_one_training_job_and_the_cooldown_holds(
    kubectl: Kubectl, ml_namespace: str
) -> None:
    overrides = {
        "hyperparameters": {"epochs": 10},
        "data": {"source": "/churn/2026-12.parquet"},
        "runPolicy": {"suspend": False},
    }
    serving(
        kubectl,
        ml_namespace,
        retrain={"enabled": True, "after": 3, "cooldown": "1h", "trainingJobOverrides": overrides},
    )
    wait_for(lambda: condition(_monitor(kubectl, ml_namespace), "Ready").get("status") == "True", 90)
    since = "2026-11-23T10:00:00Z"

    drifted(kubectl, ml_namespace, 2, since)

    # The operator takes up the window a moment later (changes it follows are coalesced per object).
    def taken_up() -> dict[str, Any] | None:
        found = condition(_monitor(kubectl, ml_namespace), "Retraining")
        return found if found and found.get("reason") != "NoDrift" else None

    retraining = wait_for(taken_up, 30, "the Retraining condition to take up the drifted window")
    assert (retraining["status"], retraining["reason"]) == ("False", "DriftNotPersistent")
    assert retrain_jobs(kubectl, ml_namespace) == []

    for windows in (3, 4, 5):
        drifted(kubectl, ml_namespace, windows, since)
    (job,) = wait_for(lambda: retrain_jobs(kubectl, ml_namespace), 30, "the retraining TrainingJob")
    assert job["metadata"]["name"].startswith("churn-retrain-")
    assert job["metadata"]["labels"]["scaleml.dev/retrain-of"] == "churn"
    assert job["spec"]["hyperparameters"]["epochs"] == 10
    assert job["spec"]["data"]["source"] == "/churn/2026-12.parquet"
    assert job["spec"]["output"] == kubectl.get("trainingjob", "churn", ml_namespace)["spec"]["output"]
    monitor = wait_for(
        lambda: _monitor(kubectl, ml_namespace).get("retrainsTriggered") == 1 and _monitor(kubectl, ml_namespace), 30
    )
    assert monitor["lastRetrainJob"] == job["metadata"]["name"]
    detected = condition(monitor, "DriftDetected")
    assert (detected["status"], detected["reason"]) == ("True", "DriftDetected")
    assert "a, c, plan" in detected["message"]
    kubectl.await_event_reasons(ml_namespace, "DriftMonitor", {"RetrainTriggered"})

    # The job runs (KWOK completes it); drift goes on, then a new episode begins: the cooldown holds.
    wait_for(
        lambda: status(kubectl, "trainingjob", job["metadata"]["name"], ml_namespace).get("phase") == "Succeeded", 120
    )
    drifted(kubectl, ml_namespace, 6, since)
    drifted(kubectl, ml_namespace, 3, "2026-11-23T11:00:00Z")
    cooling = wait_for(
        lambda: (
            condition(_monitor(kubectl, ml_namespace), "Retraining").get("reason") == "CooldownActive"
            and _monitor(kubectl, ml_namespace)
        ),
        30,
    )
    assert "cooldown of 1h" in condition(cooling, "Retraining")["message"]
    assert len(retrain_jobs(kubectl, ml_namespace)) == 1
    assert _monitor(kubectl, ml_namespace)["retrainsTriggered"] == 1


def test_a_forged_monitor_status_retrains_once_per_cooldown(kubectl: Kubectl, ml_namespace: str) -> None:
    # Whoever may create pods in the namespace may run one as churn-monitor, and write this whole
    # status: a run of drifted windows of its choosing, and no record of a last job.
    retrain = {"enabled": True, "after": 1, "cooldown": "1h", "trainingJobOverrides": {"runPolicy": {"suspend": False}}}
    serving(kubectl, ml_namespace, retrain=retrain)
    wait_for(lambda: condition(_monitor(kubectl, ml_namespace), "Ready").get("status") == "True", 90)

    def forge(hour: int) -> None:
        drifted(kubectl, ml_namespace, 3, f"2026-11-23T{hour:02d}:00:00Z")
        patch_status(
            kubectl,
            "driftmonitor",
            "churn",
            ml_namespace,
            {"lastRetrainJob": None, "lastRetrainTime": None},
            MONITOR_ACCOUNT,
        )
        # The operator records its last job again (a new one, or the one there is).
        wait_for(lambda: _monitor(kubectl, ml_namespace).get("lastRetrainJob"), 30, "the forged window taken up")

    for hour in range(5):
        forge(hour)
    names = [job["metadata"]["name"] for job in retrain_jobs(kubectl, ml_namespace)]
    assert len(names) == 1, f"{len(names)} retraining jobs within the cooldown: {names}"
    (name,) = names
    assert _monitor(kubectl, ml_namespace)["lastRetrainJob"] == name

    # Once the job has run (KWOK completes it), the cooldown still holds, whatever the status says.
    wait_for(lambda: status(kubectl, "trainingjob", name, ml_namespace).get("phase") == "Succeeded", 120)
    for hour in range(5, 10):
        forge(hour)
    assert [j["metadata"]["name"] for j in retrain_jobs(kubectl, ml_namespace)] == [name]
    retraining = condition(_monitor(kubectl, ml_namespace), "Retraining")
    assert (retraining["reason"], "cooldown of 1h" in retraining["message"]) == ("CooldownActive", True)

    # The monitor's owner may shorten the cooldown: the run of windows reported last retrains, once.
    kubectl.apply(drift_monitor(retrain={**retrain, "cooldown": "0s"}), "-n", ml_namespace)
    second = wait_for(
        lambda: [j for j in retrain_jobs(kubectl, ml_namespace) if j["metadata"]["name"] != name],
        60,
        "the second retraining job",
    )[0]["metadata"]["name"]
    wait_for(lambda: status(kubectl, "trainingjob", second, ml_namespace).get("phase") == "Succeeded", 120)
    wait_for(
        lambda: condition(_monitor(kubectl, ml_namespace), "Retraining").get("reason") == "EpisodeRetrained",
        30,
        "the run of windows that had its job",
    )
    assert len(retrain_jobs(kubectl, ml_namespace)) == 2
