"""An operator killed (SIGKILL) and restarted around the moment it creates a retraining job creates no second one.

This module runs its own operator processes instead of the shared one, to kill them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from functools import partial
from pathlib import Path

import pytest

from scaleml_operator.builders.retraining import DRIFT_SINCE_ANNOTATION
from tests.e2e.scenario import condition, export, model_deployment, patch_status, status, training_job
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.operator_process import OperatorProcess
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

# From before the operator could have looked, to after it has created and recorded the job.
KILL_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4, 1.0)


def _start(kubeconfig: Path, log: Path) -> OperatorProcess:
    process = OperatorProcess(kubeconfig, log, "--standalone")
    process.wait_alive()
    return process


def _retrain_jobs(kubectl: Kubectl, namespace: str) -> list[dict[str, object]]:
    out = kubectl.run("get", "trainingjobs", "-n", namespace, "-l", "scaleml.dev/retrained-by=churn", "-o", "json")
    jobs: list[dict[str, object]] = json.loads(out.stdout)["items"]
    return jobs


def _drift_since(job: dict[str, object]) -> str:
    metadata = job["metadata"]
    assert isinstance(metadata, dict)
    return str(metadata["annotations"][DRIFT_SINCE_ANNOTATION])


def _recorded(kubectl: Kubectl, namespace: str, name: str) -> bool:
    return bool(status(kubectl, "driftmonitor", "churn", namespace).get("lastRetrainJob") == name)


def _succeeded(kubectl: Kubectl, namespace: str, name: str) -> bool:
    return bool(status(kubectl, "trainingjob", name, namespace).get("phase") == "Succeeded")


def test_one_training_job_per_drift_whenever_the_operator_is_killed(
    cluster: ControlPlane, scaleml_installed: Kubectl, claims_namespace: str, tmp_path: Path
) -> None:
    kubectl, namespace = scaleml_installed, claims_namespace
    kubeconfig = cluster.kubeconfig_for_token(
        cluster.request_token("scaleml-system", "scaleml-operator"), name="restart-operator"
    )
    operator = _start(kubeconfig, tmp_path / "operator-0.log")
    try:
        training_job(kubectl, namespace)
        export(kubectl, namespace, 1)
        kubectl.apply(model_deployment(autoscaling=None), "-n", namespace)
        # No cooldown: every drift episode may retrain once its predecessor finished.
        policy = {
            "enabled": True,
            "after": 1,
            "cooldown": "0s",
            "trainingJobOverrides": {"runPolicy": {"suspend": False}},
        }
        kubectl.apply(merged(example("DriftMonitor"), {"spec": {"retrain": policy}}), "-n", namespace)
        wait_for(
            lambda: condition(status(kubectl, "driftmonitor", "churn", namespace), "Ready").get("status") == "True", 90
        )

        for episode, delay in enumerate(KILL_DELAYS):
            since = f"2026-11-23T{episode:02d}:00:00Z"
            report = {"driftDetected": True, "consecutiveDriftedWindows": 1, "driftSince": since, "driftScore": 0.5}
            patch_status(kubectl, "driftmonitor", "churn", namespace, report, "churn-monitor")
            time.sleep(delay)
            os.killpg(operator.process.pid, signal.SIGKILL)
            operator.stop()
            operator = _start(kubeconfig, tmp_path / f"operator-{episode + 1}.log")

            def created(since: str = since) -> list[dict[str, object]]:
                return [job for job in _retrain_jobs(kubectl, namespace) if _drift_since(job) == since]

            (job,) = wait_for(created, 60, f"the TrainingJob of drift episode {episode}")
            name = str(job["metadata"]["name"])  # type: ignore[index]
            wait_for(partial(_recorded, kubectl, namespace, name), 60, f"{name} recorded")
            assert len(_retrain_jobs(kubectl, namespace)) == episode + 1
            assert status(kubectl, "driftmonitor", "churn", namespace)["retrainsTriggered"] == episode + 1
            wait_for(partial(_succeeded, kubectl, namespace, name), 120, f"{name} to succeed")

        # Nothing more comes of any of it.
        time.sleep(2)
        assert len(_retrain_jobs(kubectl, namespace)) == len(KILL_DELAYS)
    finally:
        operator.stop()
