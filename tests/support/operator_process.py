"""`scaleml operator` as a separate process, the way it runs in its pod."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.polling import wait_for
from tests.support.ports import free_port

SCALEML = Path(sys.executable).parent / "scaleml"


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log: Path, *args: str) -> None:
        self.log = log
        self.liveness_port = free_port()
        self.metrics_port = free_port()
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [
                str(SCALEML),
                "operator",
                "--bind-address=127.0.0.1",
                f"--liveness-port={self.liveness_port}",
                f"--metrics-port={self.metrics_port}",
                *args,
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except (urllib.error.URLError, ConnectionError) as error:
            return 0, str(error)

    def wait_alive(self, timeout: float = 60) -> None:
        def alive() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited with {self.process.returncode}:\n{self.output()}")
            return self.get(self.liveness_port, "/healthz")[0] == 200

        wait_for(alive, timeout=timeout, message="the operator's /healthz")

    def metrics(self) -> str:
        status, body = self.get(self.metrics_port, "/metrics")
        assert status == 200, body
        return body

    def output(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()
        return self.process.returncode


def start_operator(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory, name: str, *args: str
) -> OperatorProcess:
    """`scaleml operator --standalone` as the operator's ServiceAccount, alive; `args` are added flags."""
    token = cluster.request_token("scaleml-system", "scaleml-operator")
    process = OperatorProcess(
        cluster.kubeconfig_for_token(token, name=name),
        tmp_path_factory.mktemp("operator") / "operator.log",
        "--standalone",
        *args,
    )
    process.wait_alive()
    return process
