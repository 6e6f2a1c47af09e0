"""Progress reaches the TrainingJob's status through a real kube-apiserver; an unreachable one delays nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scaleml_workloads.kubeapi import StatusPatcher
from scaleml_workloads.training.report import ProgressReporter, Snapshot
from tests.support.controlplane import ControlPlane, generate_pki
from tests.support.fixtures import NamespaceFactory
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.ports import free_port

pytestmark = pytest.mark.workloads

SNAPSHOT = Snapshot(epoch=2, step=300, total_steps=1000, loss=0.25, validation_metric=0.875, samples_per_second=5120.0)


def _service_account(tmp_path: Path, token: str, ca: bytes) -> Path:
    credentials = tmp_path / "serviceaccount"
    credentials.mkdir()
    (credentials / "token").write_text(token)
    (credentials / "ca.crt").write_bytes(ca)
    return credentials


@pytest.mark.apiserver
def test_progress_and_version_are_patched_into_the_training_job_status(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    control_plane: ControlPlane,
    scaleml_installed: Kubectl,
    make_namespace: NamespaceFactory,
) -> None:
    kubectl = scaleml_installed
    namespace = make_namespace()
    kubectl.apply(merged(example("TrainingJob"), {"metadata": {"namespace": namespace}}))
    # What the operator grants a training pod: patching its job's status, nothing else.
    kubectl.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "trainer", "namespace": namespace}}
    )
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "trainer", "namespace": namespace},
            "rules": [{"apiGroups": ["scaleml.dev"], "resources": ["trainingjobs/status"], "verbs": ["patch"]}],
        }
    )
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "trainer", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "trainer"},
            "subjects": [{"kind": "ServiceAccount", "name": "trainer", "namespace": namespace}],
        }
    )
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    credentials = _service_account(
        tmp_path, control_plane.request_token(namespace, "trainer"), control_plane.ca_file.read_bytes()
    )
    reporter = ProgressReporter(
        StatusPatcher(namespace, "trainingjobs", "churn", credentials), leader=True, metrics_port=0
    )

    reporter.report(SNAPSHOT)
    reporter.finish(model_version=4)

    status = kubectl.get("trainingjob", "churn", namespace)["status"]
    assert status["progress"] == {
        "epoch": 2,
        "step": 300,
        "totalSteps": 1000,
        "loss": 0.25,
        "validationMetric": 0.875,
        "samplesPerSecond": 5120.0,
    }
    assert status["modelVersion"] == 4


def test_an_unreachable_api_server_neither_fails_nor_stalls_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(free_port()))
    credentials = _service_account(tmp_path, "token", generate_pki(tmp_path / "pki").ca_cert.read_bytes())
    reporter = ProgressReporter(StatusPatcher("ml", "trainingjobs", "churn", credentials), leader=True, metrics_port=0)

    started = time.monotonic()
    reporter.report(SNAPSHOT)
    queued = time.monotonic() - started
    reporter.finish(model_version=1)

    assert queued < 0.05
    assert "Connection refused" in caplog.text
