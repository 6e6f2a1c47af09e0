"""Fixtures for end-to-end tests: the full control plane with KWOK nodes."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest
from kubernetes.client import ApiClient

from tests.support.controlplane import ControlPlane
from tests.support.fixtures import RESTRICTED, NamespaceFactory
from tests.support.kubectl import Kubectl
from tests.support.operator_process import start_operator
from tests.support.volumes import bound_claim, volume_name


@pytest.fixture(scope="session")
def k8s_client(cluster: ControlPlane) -> Iterator[ApiClient]:
    """A ``kubernetes`` ApiClient authenticated as the admin (system:masters) user."""
    client: ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig)
    )
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]


CLAIMS = ("datasets", "checkpoints", "models", "captures")


@pytest.fixture(scope="module")
def operator(
    request: pytest.FixtureRequest,
    cluster: ControlPlane,
    scaleml_installed: Kubectl,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """The operator of the test module, started with the flags in the module's OPERATOR_FLAGS, if any."""
    flags: tuple[str, ...] = getattr(request.module, "OPERATOR_FLAGS", ())
    process = start_operator(cluster, tmp_path_factory, "e2e-operator", *flags)
    yield
    process.stop()
    # (Not just "forbidden": namespaces other tests left terminating refuse new Events too.)
    assert 'User "system:serviceaccount:scaleml-system:scaleml-operator" cannot' not in process.output()


@pytest.fixture
def ml_namespace(claims_namespace: str, operator: None) -> str:
    """A restricted namespace with the example's claims, and an operator (of this test module) at work."""
    return claims_namespace


@pytest.fixture
def claims_namespace(make_namespace: NamespaceFactory, kubectl: Kubectl) -> Iterator[str]:
    """A restricted namespace with the example's claims bound to volumes."""
    namespace = make_namespace(labels=RESTRICTED)
    for claim in CLAIMS:
        source = {"hostPath": {"path": f"/srv/{volume_name(namespace, claim)}"}}
        kubectl.apply({"apiVersion": "v1", "kind": "List", "items": bound_claim(namespace, claim, source)})
    yield namespace
    for claim in CLAIMS:
        kubectl.run("delete", "pv", volume_name(namespace, claim), "--wait=false", check=False)
