"""`scaleml operator` as its own ServiceAccount, with the install manifests' RBAC: what runs in a cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.manifests import example
from tests.support.operator_process import OperatorProcess
from tests.support.polling import wait_for

pytestmark = pytest.mark.apiserver

SERVICE_ACCOUNT = "system:serviceaccount:scaleml-system:scaleml-operator"
StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def operator_kubeconfig(control_plane: ControlPlane, scaleml_installed: Kubectl) -> Path:
    """A kubeconfig holding a token of the operator's ServiceAccount from manifests/."""
    token = control_plane.request_token("scaleml-system", "scaleml-operator")
    return control_plane.kubeconfig_for_token(token, name="scaleml-operator")


@pytest.fixture
def start_operator(operator_kubeconfig: Path, tmp_path: Path) -> Iterator[StartOperator]:
    started: list[OperatorProcess] = []

    def start(*args: str) -> OperatorProcess:
        process = OperatorProcess(operator_kubeconfig, tmp_path / f"operator-{len(started)}.log", *args)
        started.append(process)
        process.wait_alive()
        return process

    yield start
    for process in started:
        process.stop()


def _accepted(kubectl: Kubectl, resource: str, name: str, namespace: str) -> bool:
    conditions = kubectl.get(resource, name, namespace).get("status", {}).get("conditions", [])
    return any(c["type"] == "Accepted" and c["status"] == "True" for c in conditions)


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` that carry `labels` (and any others)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def test_operator_works_with_only_its_own_rbac(
    start_operator: StartOperator, scaleml_installed: Kubectl, namespace: str
) -> None:
    operator = start_operator("--priority=100")
    for kind in ("TrainingJob", "ModelDeployment", "DriftMonitor"):
        scaleml_installed.apply(example(kind), "-n", namespace)
    for resource in ("trainingjob", "modeldeployment", "driftmonitor"):
        wait_for(partial(_accepted, scaleml_installed, resource, "churn", namespace), 30, f"{resource} accepted")

    def metrics_with_monitor() -> str | None:
        metrics = operator.metrics()
        return metrics if _sample(metrics, "scaleml_operator_objects", kind="DriftMonitor", phase="Unknown") else None

    metrics = wait_for(metrics_with_monitor, timeout=10, message="the objects metric")
    assert (
        _sample(metrics, "scaleml_operator_handler_duration_seconds_count", kind="TrainingJob", handler="reconcile")
        >= 1
    )
    # Pending, or already Running where the control plane has nodes (after the e2e tier in the same session).
    assert _sample(metrics, "scaleml_operator_objects", kind="TrainingJob") >= 1
    assert _sample(metrics, "scaleml_operator_reaction_lag_seconds_count", kind="ModelDeployment") >= 1
    assert f'User "{SERVICE_ACCOUNT}" cannot' not in operator.output()


def test_replicas_peer_and_the_standby_takes_over(
    start_operator: StartOperator, scaleml_installed: Kubectl, namespace: str
) -> None:
    # kopf starts paused until it has read the peering object; only the higher priority resumes.
    active = start_operator("--priority=200")
    wait_for(lambda: "Resuming operations" in active.output(), 30, "the active replica to start handling")
    standby = start_operator("--priority=100")

    scaleml_installed.apply(example("DriftMonitor"), "-n", namespace)
    wait_for(lambda: _accepted(scaleml_installed, "driftmonitor", "churn", namespace), 30, "accepted by the active one")
    assert _sample(standby.metrics(), "scaleml_operator_handler_duration_seconds_count", kind="DriftMonitor") == 0
    assert "Resuming operations" not in standby.output()

    assert active.stop() == 0
    wait_for(lambda: "Resuming operations" in standby.output(), 90, "the standby to take over")
    scaleml_installed.apply(example("ModelDeployment"), "-n", namespace)
    wait_for(lambda: _accepted(scaleml_installed, "modeldeployment", "churn", namespace), 30, "accepted by the standby")
