"""A local cluster to try ScaleML on: the test suite's control plane, the CRDs and the operator (`make cluster`).

``python -m tests.support.cluster`` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and KWOK with fake GPU nodes (:class:`~tests.support.controlplane.ControlPlane`, the same one the tests
run), installs ``manifests/`` as the suite does, adds PersistentVolumes for the example claims in the
``default`` namespace, runs ``scaleml operator --standalone`` as its ServiceAccount and prints the
``KUBECONFIG`` to export. It then waits: Ctrl-C, SIGTERM or SIGHUP stops the operator and every
component, and nothing is left running or listening.

KWOK stands in for the kubelet, so pods turn Running (and Job pods Succeeded) without any container
running: what is real is the operator, the API server and the controllers around it.

With ``--real-node`` (`make cluster-node`, as root) the cluster has one real node instead, the node
tier's (:class:`~tests.support.node.node.RealNode`): the workload image is built from this checkout
and imported into it, the example claims are `local` volumes in its directory, the demo's data set
is on the ``datasets`` volume, and the demo's CPU manifests (``scaleml demo`` runs the same YAML)
train, serve and monitor in real pods. A stop also stops the node and deletes its images; the
volumes' files stay.

Everything lives in ``--dir`` (default ``~/.cache/scaleml/cluster``, next to the control-plane binaries
and outside the repository): ``kubeconfig`` (admin), ``operator.log`` and ``control-plane/`` (the
components' logs, PKI and the operator's token kubeconfig), and with a real node ``node/`` (its logs
and volumes). The logs stay after a stop, for a look at what happened; the kubeconfig goes, since it
names a port that no longer listens. A lock on the directory keeps a second cluster from overwriting
the first one's kubeconfig.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Final

import pyarrow.parquet as pq  # type: ignore[import-untyped]

from scaleml_local.demo.scenario import MANIFESTS as DEMO_MANIFEST_FILES
from scaleml_local.demo.scenario import NAME as DEMO_NAME
from scaleml_local.demo.scenario import dataset as demo_dataset
from tests.support.controlplane import (
    KUBERNETES_VERSION,
    NODES_TIER,
    ControlPlane,
    ControlPlaneError,
    find_binaries,
    tail,
)
from tests.support.kubectl import KUBECTL, Kubectl
from tests.support.manifests import EXAMPLES, ROOT, load_all
from tests.support.node.node import RealNode, find_node_binaries
from tests.support.node.workload_image import ImageError, import_workload_images
from tests.support.operator_process import OperatorProcess
from tests.support.volumes import on_node

__all__ = ["DEFAULT_DIR", "DEMO_MANIFESTS", "GPU_NODE_LABEL", "main"]

DEFAULT_DIR: Final = Path("~/.cache/scaleml/cluster")
#: What NVIDIA's GPU feature discovery puts on GPU nodes; the example TrainingJob selects it.
GPU_NODE_LABEL: Final = ("nvidia.com/gpu.present", "true")
EXAMPLES_NAMESPACE: Final = "default"
OPERATOR_NAMESPACE: Final = "scaleml-system"
OPERATOR_ACCOUNT: Final = "scaleml-operator"
#: The PKI of the control plane is valid for 7 days; a shorter token would leave the operator locked out
#: of a cluster that is still up (no kubelet here refreshes it).
TOKEN_SECONDS: Final = 7 * 24 * 3600
#: What a trainer pod does at the end of a run (tests/e2e/scenario.py plays it the same way).
EXPORT_COMMAND: Final = (
    'kubectl patch trainingjob churn --subresource=status --type=merge -p \'{"status":{"modelVersion":1}}\''
)
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The CPU manifests `scaleml demo` runs, which a real node runs as they are.
DEMO_MANIFESTS: Final = Path(str(DEMO_MANIFEST_FILES))


class Stop(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no ``except Exception`` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)


class AlreadyRunningError(RuntimeError):
    pass


def say(message: str = "") -> None:
    # Flushed at once: a test, or `make` piping into a log, waits for these lines.
    print(message, flush=True)


class StopSignals:
    """Turns the first SIGINT, SIGTERM or SIGHUP into :class:`Stop`, and ignores the ones after it.

    Ignoring them keeps a second Ctrl-C from cutting the clean-up short and leaving processes behind;
    every step of the clean-up is bounded anyway (SIGTERM, then SIGKILL after 10-30 s).
    """

    def __init__(self) -> None:
        self.stopping = False
        self._deferring = False
        self._pending: int | None = None

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            return
        if self._deferring:
            self._pending = signum
            return
        self.stopping = True
        raise Stop(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Holds a stop back until the block is done: between a child's start and our holding it, it would leak."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
            if self._pending is not None and not self.stopping:
                self.stopping = True
                raise Stop(self._pending)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise AlreadyRunningError(f"a cluster (pid {holder}) is already running in {directory}") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def example_volumes(node: RealNode | None = None) -> list[dict[str, Any]]:
    """A PersistentVolume for each claim in manifests/examples/volumes.yaml, pre-bound to it.

    Sizes and access modes are read from the claims, so that an edit there keeps them binding. No
    provisioner runs here. Without a real node the volume is a hostPath that nothing mounts (KWOK
    mounts nothing); with one, a `local` volume in a directory of the node's.
    """
    volumes = []
    for claim in load_all(EXAMPLES / "volumes.yaml"):
        if claim["kind"] != "PersistentVolumeClaim":
            continue
        name = claim["metadata"]["name"]
        volume = f"scaleml-example-{name}"
        source: dict[str, Any] = {"hostPath": {"path": f"/srv/scaleml/{name}"}}
        if node is not None:
            directory = example_volume(node, name)
            directory.mkdir(parents=True, exist_ok=True)
            source = {"local": {"path": str(directory)}, "nodeAffinity": on_node(node.name)}
        volumes.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume, "labels": {"app.kubernetes.io/part-of": "scaleml-examples"}},
                "spec": {
                    "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                    "accessModes": list(claim["spec"]["accessModes"]),
                    # The claims name no class, and with no default StorageClass such a claim binds to
                    # a volume of no class.
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Retain",
                    **source,
                    "claimRef": {"namespace": EXAMPLES_NAMESPACE, "name": name},
                },
            }
        )
    return volumes


def example_volume(node: RealNode, claim: str) -> Path:
    """The directory of the example claim `claim` on the real node."""
    return node.workdir / "volumes" / claim


def _dead_components(plane: ControlPlane) -> list[str]:
    # memory_usage() lists the components whose process is still alive.
    alive = plane.memory_usage()
    return [name for name in COMPONENTS if name not in alive]


def _kubectl_hint() -> str:
    if shutil.which("kubectl"):
        return ""
    return f"  (kubectl is not on your PATH; the virtual environment has one: export PATH={KUBECTL.parent}:$PATH)\n"


def _start_cluster(plane: ControlPlane, nodes: int, node: RealNode | None) -> None:
    say(f"Starting etcd and kube-apiserver {KUBERNETES_VERSION} ...")
    plane.start_api()
    say(f"Starting kube-controller-manager, kube-scheduler and KWOK with {nodes} fake node(s) ...")
    plane.start_nodes(count=nodes)
    kubectl = Kubectl(plane.kubeconfig)
    if plane.nodes:
        key, value = GPU_NODE_LABEL
        # The fake nodes have GPUs in their capacity but not the label the example TrainingJob selects.
        kubectl.run("label", "node", *plane.nodes, f"{key}={value}", "--overwrite")

    say("Installing manifests/ (server-side apply) ...")
    kubectl.run("apply", "--server-side", "-k", str(ROOT / "manifests"))
    kubectl.run(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=scaleml"
    )
    # The CRDs' storage answers 429 for a moment after Established: kubectl's client waits that out, and
    # the operator starts on a quiet log instead of one with a retried error per kind.
    kubectl.run("get", "trainingjobs,modeldeployments,driftmonitors", "--all-namespaces")
    # No image of the operator is on any node: it runs as a local process instead.
    kubectl.run("scale", "deployment", "scaleml-operator", "-n", OPERATOR_NAMESPACE, "--replicas=0")
    if node is not None:
        say("Starting the real node: containerd, kubelet, kube-proxy and CoreDNS ...")
        node.start()
        say("Building the workload image from this checkout and importing it into the node (a few minutes) ...")
        import_workload_images(node)
        # The demo's data set, where its TrainingJob reads it.
        data = example_volume(node, "datasets") / DEMO_NAME / "train.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(demo_dataset(), data)
    volumes = example_volumes(node)
    kubectl.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": volumes}))


def _relative(path: Path) -> str:
    """`path` as a user in the current directory would type it."""
    relative = os.path.relpath(path, Path.cwd())
    return str(path) if relative.startswith("..") else relative


def _banner(plane: ControlPlane, operator: OperatorProcess, kubeconfig: Path, node: RealNode | None) -> str:
    examples = _relative(EXAMPLES)
    if node is None:
        nodes = f"{len(plane.nodes)} KWOK node(s) ({', '.join(plane.nodes)}; pods are simulated, no container runs)"
        tryout = (
            f"  kubectl apply -f {examples}/\n"
            "  kubectl get scaleml -w\n"
            f"{_kubectl_hint()}\n"
            "KWOK runs no trainer, so no model version gets exported and the ModelDeployment waits for one.\n"
            "Play the trainer's part to see it served:\n\n"
            f"  {EXPORT_COMMAND}\n\n"
        )
        volumes = "PersistentVolumes scaleml-example-*"
    else:
        nodes = f"one real node ({node.name}: containerd, runc, CNI, kube-proxy, CoreDNS; pods run for real)"
        service = f"http://{DEMO_NAME}.{EXAMPLES_NAMESPACE}.svc:8000/v2/models/{DEMO_NAME}"
        tryout = (
            "The demo's CPU manifests train, serve and monitor a classifier of scikit-learn's breast cancer data\n"
            "(on the datasets volume already):\n\n"
            f"  kubectl apply -f {examples}/volumes.yaml -f {_relative(DEMO_MANIFESTS)}/\n"
            "  kubectl get scaleml -w\n"
            f"  kubectl logs -f job/{DEMO_NAME}\n"
            f"{_kubectl_hint()}\n"
            f"Triton answers pods at {service}; the monitor waits for captured requests.\n\n"
        )
        volumes = f"PersistentVolumes scaleml-example-*, in {node.workdir / 'volumes'}"
    return (
        f"\nScaleML cluster: kube-apiserver at {plane.server}, {nodes}.\n\n"
        f"  export KUBECONFIG={kubeconfig}\n\n"
        "Then try:\n\n"
        f"{tryout}"
        f"Operator log:     {operator.log}   (metrics: http://127.0.0.1:{operator.metrics_port}/metrics)\n"
        f"Component logs:   {plane.workdir}/*.log\n"
        f"Example volumes:  {volumes} for the claims in {EXAMPLES_NAMESPACE}\n\n"
        "Ctrl-C stops everything.\n"
    )


def _serve(plane: ControlPlane, operator: OperatorProcess) -> int:
    """Wait for a stop signal (which raises Stop); 1 if the operator or a component dies first."""
    while True:
        time.sleep(1)
        if operator.process.poll() is not None:
            say(f"The operator exited with {operator.process.returncode}; last lines of {operator.log}:")
            say(tail(operator.log, 30))
            return 1
        dead = _dead_components(plane)
        if dead:
            for name in dead:
                say(f"{name} exited; last lines of {plane.log_path(name)}:")
                say(tail(plane.log_path(name), 30))
            return 1


def run(directory: Path, nodes: int, signals: StopSignals, real_node: bool = False) -> int:
    binaries = find_binaries()
    missing = binaries.missing(NODES_TIER)
    if missing:
        say(f"Missing: {', '.join(missing)}. `make control-plane` builds them.")
        return 1
    node_binaries = find_node_binaries()
    if real_node and (missing := node_binaries.missing()):
        say(f"Missing: {', '.join(missing)}. `make node` builds them.")
        return 1
    if real_node and os.geteuid() != 0:
        say("A real node needs root (a bridge, iptables rules, mounts and cgroups).")
        return 1
    kubeconfig = directory / "kubeconfig"
    with _locked(directory):
        workdir = directory / "control-plane"
        # Logs are opened for appending and kept after a stop: start each cluster with fresh ones.
        shutil.rmtree(workdir, ignore_errors=True)
        kubeconfig.unlink(missing_ok=True)
        plane = ControlPlane(binaries, workdir=workdir)
        node = RealNode(plane, node_binaries, directory / "node") if real_node else None
        operator: OperatorProcess | None = None
        try:
            began = time.monotonic()
            _start_cluster(plane, nodes, node)
            say("Starting the operator as its ServiceAccount ...")
            token = plane.request_token(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, expiration_seconds=TOKEN_SECONDS)
            token_kubeconfig = plane.kubeconfig_for_token(token, name=OPERATOR_ACCOUNT)
            with signals.deferred():
                operator = OperatorProcess(token_kubeconfig, directory / "operator.log", "--standalone")
            operator.wait_alive()
            shutil.copyfile(plane.kubeconfig, kubeconfig)
            kubeconfig.chmod(0o600)
            say(f"Up in {time.monotonic() - began:.0f} s.")
            say(_banner(plane, operator, kubeconfig, node))
            return _serve(plane, operator)
        except Stop as stop:
            say(f"\n{stop}: stopping ...")
            return 0
        except (ControlPlaneError, ImageError, AssertionError) as error:
            # AssertionError: what kubectl and the operator's readiness wait (test helpers) raise.
            say(f"Start-up failed: {error}")
            return 1
        finally:
            signals.stopping = True
            if operator is not None:
                operator.stop()
            if node is not None:
                # Its pods, containers, network and images go; its volumes' files stay, like the logs.
                node.remove()
            plane.stop()
            kubeconfig.unlink(missing_ok=True)
            stopped = "the real node, " if node is not None else ""
            say(f"Stopped: operator, {stopped}KWOK, controllers, kube-apiserver and etcd. Logs are in {directory}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.cluster", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"where the kubeconfig, the operator log and the components' files go (default {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--nodes", type=int, help="fake nodes, each with 8 nvidia.com/gpu (default 2, or 0 with --real-node)"
    )
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="add one real node (root; `make node` builds it) on which pods run, with the workload image built "
        "from this checkout and the demo's data set",
    )
    args = parser.parse_args(argv)
    nodes = args.nodes if args.nodes is not None else (0 if args.real_node else 2)
    signals = StopSignals()
    # Installed before anything starts, so that a signal during start-up also stops what already runs.
    signals.install()
    try:
        return run(args.dir.expanduser().resolve(), nodes, signals, args.real_node)
    except AlreadyRunningError as error:
        say(str(error))
        return 1
    except Stop:
        # Arrived before run() held anything to stop: a requested stop all the same.
        return 0


if __name__ == "__main__":
    sys.exit(main())
