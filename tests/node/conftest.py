"""Fixtures for the node tier: the session's control plane plus one real node that runs containers."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.fixtures import RESTRICTED, NamespaceFactory
from tests.support.kubectl import Kubectl
from tests.support.manifests import merged
from tests.support.node import host
from tests.support.node.images import busybox_rootfs, oci_archive
from tests.support.node.node import RealNode, find_node_binaries
from tests.support.node.workload_image import import_workload_images
from tests.support.operator_process import start_operator
from tests.support.polling import wait_for
from tests.support.requirements import skip_or_fail
from tests.support.volumes import bound_claim, on_node, volume_name
from tests.workloads.runs import churn_table, write_parquet

#: The image the tier's own pods run: busybox, imported into the node (nothing is pulled).
BUSYBOX_IMAGE = "scaleml.dev/busybox:1"


@dataclasses.dataclass(frozen=True)
class NodeRun:
    """The node, and the host as it was before the node started (to compare with after it stopped)."""

    node: RealNode
    before: host.HostState


@pytest.fixture(scope="session")
def node_run(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRun]:
    """The session's real node, with the busybox image; removed with its images at the end.

    Skips (fails under `make test`) naming what is missing: `make node`'s binaries, or root.
    ``SCALEML_NODE_WORKDIR`` keeps its logs, configs and volumes in that directory.
    """
    binaries = find_node_binaries()
    missing = binaries.missing()
    if missing:
        skip_or_fail(f"the real node's parts are missing: {', '.join(missing)} (`make node` builds them)")
    if os.geteuid() != 0:
        skip_or_fail("the real node needs root (a bridge, iptables rules, mounts and cgroups)")
    workdir = Path(os.environ.get("SCALEML_NODE_WORKDIR") or tmp_path_factory.mktemp("node"))
    before = host.snapshot()
    node = RealNode(cluster, binaries, workdir)
    node.start()
    try:
        rootfs = busybox_rootfs(workdir / "busybox-rootfs")
        node.import_image(lambda out: oci_archive(rootfs, BUSYBOX_IMAGE, out, scratch=workdir))
        yield NodeRun(node, before)
    finally:
        node.remove()


@pytest.fixture
def real_node(node_run: NodeRun, kubectl: Kubectl) -> Iterator[RealNode]:
    """The node, running (started again if a test stopped it), and the only one pods are scheduled to
    during the test.

    The e2e tier's KWOK nodes are cordoned meanwhile: the tests apply manifests as users write them,
    with no node selector, and their pods must run for real.
    """
    node = node_run.node
    node.start()
    fake = kubectl.run("get", "nodes", "-l", "type=kwok", "-o", "name").stdout.split()
    for name in fake:
        kubectl.run("cordon", name)
    kubectl.run("uncordon", f"node/{node.name}")
    try:
        yield node
    finally:
        # Between the tier's tests, as in the e2e tier, pods go to the fake nodes.
        kubectl.run("cordon", f"node/{node.name}", check=False)
        for name in fake:
            kubectl.run("uncordon", name, check=False)


@pytest.fixture(scope="session")
def workload_image(node_run: NodeRun) -> str:
    """The operator's default workload image, built from this checkout and imported into the node, also
    tagged as its default Triton image (see import_workload_images)."""
    node_run.node.start()
    return import_workload_images(node_run.node)


@pytest.fixture(scope="module")
def node_operator(
    cluster: ControlPlane, scaleml_installed: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The operator as its ServiceAccount, for the module's tests.

    It runs as a local process: the install's Deployment is scaled to none meanwhile, whose pods would
    otherwise land on the real node with an image it does not have.
    """
    deployment = ("deployment", "scaleml-operator", "-n", "scaleml-system")
    replicas = scaleml_installed.run("get", *deployment, "-o", "jsonpath={.spec.replicas}").stdout
    scaleml_installed.run("scale", *deployment, "--replicas=0")
    process = start_operator(cluster, tmp_path_factory, "node-operator")
    yield
    process.stop()
    scaleml_installed.run("scale", *deployment, f"--replicas={replicas}")


@pytest.fixture
def ml_namespace(
    real_node: RealNode, workload_image: str, node_operator: None, make_namespace: NamespaceFactory
) -> str:
    """A namespace enforcing Pod Security "restricted", with the node, its images and the operator ready."""
    return make_namespace(RESTRICTED)


def local_claims(kubectl: Kubectl, node: RealNode, namespace: str, claims: tuple[str, ...]) -> dict[str, Path]:
    """A `local` PersistentVolume on the real node for each claim, bound to it; the host directory of each.

    The directories are root's: the kubelet gives a claim mounted read-write to the pod's fsGroup, as
    on any node, and a read-only one is read as it is.
    """
    directories = {}
    for claim in claims:
        directory = node.workdir / "volumes" / volume_name(namespace, claim)
        directory.mkdir(parents=True, exist_ok=True)
        directories[claim] = directory
        manifests = bound_claim(namespace, claim, {"local": {"path": str(directory)}}, nodeAffinity=on_node(node.name))
        kubectl.apply({"apiVersion": "v1", "kind": "List", "items": manifests})
    return directories


#: The claims a TrainingJob churn mounts.
TRAINING_CLAIMS = ("datasets", "checkpoints", "models")


def churn_claims(
    kubectl: Kubectl, node: RealNode, namespace: str, rows: int, claims: tuple[str, ...] = TRAINING_CLAIMS
) -> dict[str, Path]:
    """`claims` on local volumes (see local_claims), the data set a churn table of `rows` rows."""
    volumes = local_claims(kubectl, node, namespace, claims)
    write_parquet(volumes["datasets"] / "churn" / "train.parquet", churn_table(rows))
    return volumes


def churn_training_job(**changes: Any) -> dict[str, Any]:
    """TrainingJob churn: an MLP on tests.workloads.runs.churn_table, two CPU workers, checkpoints; `changes` merged."""
    return merged(
        {
            "apiVersion": "scaleml.dev/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": "churn"},
            "spec": {
                "model": {"architecture": "mlp", "params": {"hiddenSizes": [16]}},
                "data": {"source": "churn/train.parquet", "volumeClaim": "datasets", "target": "churned"},
                "hyperparameters": {"epochs": 3, "batchSize": 64, "learningRate": 0.01, "seed": 7},
                "resources": {"workers": 2, "cpu": "500m", "memory": "1536Mi"},
                "checkpoint": {"volumeClaim": "checkpoints", "everySteps": 10, "keep": 2},
                "output": {"volumeClaim": "models", "modelName": "churn", "formats": ["torchscript"]},
            },
        },
        {"spec": changes},
    )


def finished(kubectl: Kubectl, namespace: str, name: str = "churn") -> dict[str, Any] | None:
    """TrainingJob `name` once it succeeded or failed."""
    job = kubectl.find("trainingjob", name, namespace)
    return job if job and job.get("status", {}).get("phase") in ("Succeeded", "Failed") else None


def pod_logs(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    """`kubectl logs` of every pod in `namespace`, by pod name (for a failed assertion's message)."""
    pods = json.loads(kubectl.run("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    return {
        pod["metadata"]["name"]: kubectl.run("logs", pod["metadata"]["name"], "-n", namespace, check=False).stdout
        for pod in pods
    }


def restricted_pod(name: str, command: str, image: str = BUSYBOX_IMAGE, **spec: Any) -> dict[str, Any]:
    """A pod that passes "restricted", running `command` with `sh -c`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", command],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            **spec,
        },
    }


def pod_finished(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    """The pod once it succeeded or failed."""
    pod = kubectl.find("pod", name, namespace)
    return pod if pod and pod["status"].get("phase") in ("Succeeded", "Failed") else None


def run_to_end(kubectl: Kubectl, namespace: str, pod: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Creates `pod` and returns it once it ended."""
    kubectl.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(pod))
    name = pod["metadata"]["name"]
    return wait_for(lambda: pod_finished(kubectl, namespace, name), timeout, f"pod {name} to finish")
