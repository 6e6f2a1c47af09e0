"""Progress reaches the TrainingJob's status through a real kube-apiserver; an unreachable one delays nothing,
and what it could not take arrives once it answers."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scaleml_workloads.kubeapi import REQUEST_TIMEOUT_SECONDS, StatusPatcher
from scaleml_workloads.training.report import ProgressReporter, Snapshot
from tests.support.controlplane import ControlPlane, generate_pki
from tests.support.fixtures import NamespaceFactory
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for
from tests.support.ports import free_port

pytestmark = pytest.mark.workloads

SNAPSHOT = Snapshot(epoch=2, step=300, total_steps=1000, loss=0.25, validation_metric=0.875, samples_per_second=5120.0)


def _service_account(tmp_path: Path, token: str, ca: bytes) -> Path:
    credentials = tmp_path / "serviceaccount"
    credentials.mkdir()
    (credentials / "token").write_text(token)
    (credentials / "ca.crt").write_bytes(ca)
    return credentials


@dataclass(frozen=True)
class Trainer:
    """TrainingJob churn in a namespace of its own, and the credentials of what the operator grants a
    training pod: patching its job's status, nothing else."""

    kubectl: Kubectl
    namespace: str
    credentials: Path
    #: The API server's host and port.
    api_server: tuple[str, int]

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.kubectl.get("trainingjob", "churn", self.namespace).get("status", {})
        return found


@pytest.fixture
def trainer(
    tmp_path: Path, control_plane: ControlPlane, scaleml_installed: Kubectl, make_namespace: NamespaceFactory
) -> Trainer:
    kubectl, namespace = scaleml_installed, make_namespace()
    kubectl.apply(merged(example("TrainingJob"), {"metadata": {"namespace": namespace}}))
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
    credentials = _service_account(
        tmp_path, control_plane.request_token(namespace, "trainer"), control_plane.ca_file.read_bytes()
    )
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    return Trainer(kubectl, namespace, credentials, (host, int(port)))


@pytest.mark.apiserver
def test_progress_and_version_are_patched_into_the_training_job_status(
    trainer: Trainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = trainer.api_server
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    reporter = ProgressReporter(
        StatusPatcher(trainer.namespace, "trainingjobs", "churn", trainer.credentials), leader=True, metrics_port=0
    )

    reporter.report(SNAPSHOT)
    reporter.finish(model_version=4)

    status = trainer.status()
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
    finished = time.monotonic() - started

    assert queued < 0.05
    # The last patch is sent again while the run ends, for a bounded time.
    assert finished < REQUEST_TIMEOUT_SECONDS * 2 + 1
    assert "Connection refused" in caplog.text


@contextmanager
def _forwarded(port: int, upstream: tuple[str, int]) -> Iterator[None]:
    """Connections to 127.0.0.1:`port` piped to `upstream` byte for byte (TLS passes through), while open."""

    class Pipe(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.create_connection(upstream) as server:
                back = threading.Thread(target=_pump, args=(server, self.request), daemon=True)
                back.start()
                _pump(self.request, server)
                back.join()

    with socketserver.ThreadingTCPServer(("127.0.0.1", port), Pipe) as listener:
        listener.daemon_threads = True
        threading.Thread(target=listener.serve_forever, daemon=True).start()
        try:
            yield
        finally:
            listener.shutdown()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)


@pytest.mark.apiserver
def test_a_status_the_api_server_could_not_take_arrives_once_it_answers_and_a_refused_one_is_dropped(
    trainer: Trainer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The pod's address of the API server, where nothing answers until the test forwards it.
    port = free_port()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    patcher = StatusPatcher(trainer.namespace, "trainingjobs", "churn", trainer.credentials)

    patcher.patch({"modelVersion": 3})
    wait_for(lambda: "Connection refused" in caplog.text, 10, "the refused connection")
    assert "sending it again" in caplog.text
    with _forwarded(port, trainer.api_server):
        wait_for(lambda: trainer.status().get("modelVersion") == 3, 30, "the patch sent again to arrive")
        # What the API server refuses (the schema's bound) is not sent again: the next patch goes alone.
        patcher.patch({"progress": {"step": -1}})
        wait_for(lambda: "HTTP 422" in caplog.text, 10, "the refusal")
        patcher.patch({"modelVersion": 4})
        wait_for(lambda: trainer.status().get("modelVersion") == 4, 10, "the next patch to arrive")
        patcher.close()
    assert "progress" not in trainer.status()
