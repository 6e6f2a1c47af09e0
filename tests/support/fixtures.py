"""Fixtures for tests that use the test control plane (loaded by tests/conftest.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from tests.support.controlplane import NODES_TIER, ControlPlane, MissingBinariesError, find_binaries
from tests.support.kubectl import Kubectl
from tests.support.manifests import ROOT
from tests.support.polling import wait_for
from tests.support.requirements import skip_or_fail

NamespaceFactory = Callable[..., str]
#: The label of a namespace that enforces Pod Security "restricted", as the operator's pods must pass.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> ControlPlane:
    """The session's control plane with the nodes tier started as well.

    kube-controller-manager, kube-scheduler and KWOK run next to etcd and kube-apiserver, and one fake
    Node (32 cpu, 128Gi, 110 pods, 8 nvidia.com/gpu) is Ready. Same process set as ``control_plane``
    and ``api``. Pods annotated ``scaleml.dev/kwok-exit-code: "<n>"`` end Failed with exit code n.
    """
    # Check every binary first, so that the skip names all that is missing, not just the API tier.
    binaries = find_binaries()
    missing = binaries.missing(NODES_TIER)
    if missing:
        skip_or_fail(str(MissingBinariesError(missing, binaries.searched)))
    plane: ControlPlane = request.getfixturevalue("control_plane")
    plane.start_nodes()
    return plane


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """kubectl as the cluster admin."""
    return Kubectl(control_plane.kubeconfig)


@pytest.fixture(scope="session")
def scaleml_installed(kubectl: Kubectl) -> Kubectl:
    """ScaleML's install manifests (CRDs, namespace, RBAC, peering CRD, operator Deployment) applied."""
    kubectl.run("apply", "--server-side", "-k", str(ROOT / "manifests"))
    kubectl.run(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=scaleml"
    )
    return kubectl


@pytest.fixture
def make_namespace(
    request: pytest.FixtureRequest, control_plane: ControlPlane, kubectl: Kubectl
) -> Iterator[NamespaceFactory]:
    """A factory ``make_namespace(labels=None) -> name`` for fresh namespaces, deleted after the test.

    With the nodes tier running it returns once the namespace's ``default`` ServiceAccount exists
    (ServiceAccount admission rejects pods until then); without controllers nothing creates it.
    """
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:48].strip("-") or "test"
    created: list[str] = []

    def make(labels: Mapping[str, str] | None = None) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:6]}"
        kubectl.run("create", "namespace", name)
        created.append(name)
        if labels:
            kubectl.run("label", "namespace", name, *(f"{key}={value}" for key, value in labels.items()))
        if control_plane.nodes_running:
            wait_for(
                lambda: kubectl.run("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
                30,
                f"the default ServiceAccount in namespace {name}",
            )
        return name

    yield make
    for name in created:
        kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def namespace(make_namespace: NamespaceFactory) -> str:
    """The name of a fresh namespace for this test."""
    return make_namespace()
