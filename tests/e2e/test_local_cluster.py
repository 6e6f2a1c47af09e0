"""`make cluster` (tests/support/cluster.py): up, the examples applied as a user would, then Ctrl-C.

It runs its own control plane next to the session's one (``control_plane``): every component binds a
free port of its own, and its files go to this test's directory.
"""

from __future__ import annotations

import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.cluster import EXPORT_COMMAND
from tests.support.cluster_process import alive, cluster_process, descendants, printed_kubeconfig
from tests.support.controlplane import NODES_TIER, MissingBinariesError, find_binaries
from tests.support.kubectl import Kubectl
from tests.support.manifests import EXAMPLES
from tests.support.polling import wait_for
from tests.support.requirements import skip_or_fail

pytestmark = pytest.mark.e2e

# /proc/<pid>/comm is cut to 15 characters: "kube-controller-manager" reads "kube-controller".
CHILDREN = {"etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kwok", "scaleml"}


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def cluster_module(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    """The module running, with its output file and its directory; stopped and reaped whatever happens."""
    binaries = find_binaries()
    missing = binaries.missing(NODES_TIER)
    if missing:
        skip_or_fail(str(MissingBinariesError(missing, binaries.searched)))
    output, directory = tmp_path / "output.txt", tmp_path / "cluster"
    with cluster_process(directory, output, "--nodes=1") as process:
        yield process, output, directory


def test_make_cluster_runs_the_examples_and_stops_clean(
    cluster_module: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    process, output, directory = cluster_module

    kubeconfig = printed_kubeconfig(process, output, 60)
    assert kubeconfig == directory / "kubeconfig"
    text = output.read_text()
    assert "kubectl apply -f manifests/examples/" in text
    assert "kubectl get scaleml -w" in text
    assert f"{directory / 'operator.log'}" in text
    children = descendants(process.pid)
    assert set(children.values()) == CHILDREN, children
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    port = urlsplit(server).port
    assert port is not None
    assert _listening(port)

    # As the banner says: the examples as they are, into the kubeconfig's namespace (default).
    kubectl = Kubectl(kubeconfig)
    kubectl.run("apply", "-f", str(EXAMPLES))

    def training_job_runs() -> str | None:
        phase = (kubectl.find("trainingjob", "churn", "default") or {}).get("status", {}).get("phase")
        return phase if phase in ("Running", "Succeeded") else None

    wait_for(training_job_runs, 30, "the example TrainingJob to run (GPU node selector matched)")
    labels = kubectl.run("get", "nodes", "-o", r"jsonpath={.items[*].metadata.labels.nvidia\.com/gpu\.present}")
    assert labels.stdout.split() == ["true"]
    claims = kubectl.run("get", "pvc", "-n", "default", "-o", "jsonpath={.items[*].status.phase}").stdout.split()
    assert claims == ["Bound"] * 4
    wait_for(lambda: kubectl.find("service", "churn", "default"), 30, "the ModelDeployment's Service")
    # The banner's way to stand in for the trainer, after which the ModelDeployment serves version 1.
    kubectl.run(*shlex.split(EXPORT_COMMAND)[1:])

    def served() -> bool:
        status = (kubectl.find("modeldeployment", "churn", "default") or {}).get("status", {})
        return bool(status.get("phase") == "Ready" and status.get("servedVersion") == 1)

    wait_for(served, 30, "the example ModelDeployment to serve version 1")

    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, output.read_text()
    stopping = time.monotonic() - began
    assert stopping < 30, f"took {stopping:.0f} s to stop"
    assert [comm for child, comm in children.items() if alive(child)] == []
    assert not _listening(port)
    assert not kubeconfig.exists()
    assert "Stopped: operator, KWOK, controllers, kube-apiserver and etcd" in output.read_text()
    log = (directory / "operator.log").read_text()
    assert 'User "system:serviceaccount:scaleml-system:scaleml-operator" cannot' not in log
