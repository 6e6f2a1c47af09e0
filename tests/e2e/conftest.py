"""Fixtures for end-to-end tests: the full control plane with KWOK nodes."""

from __future__ import annotations

from collections.abc import Iterator

import kubernetes
import pytest
from kubernetes.client import ApiClient

from tests.support.controlplane import NODES_TIER, ControlPlane, MissingBinariesError, find_binaries
from tests.support.requirements import skip_or_fail


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
def k8s_client(cluster: ControlPlane) -> Iterator[ApiClient]:
    """A ``kubernetes`` ApiClient authenticated as the admin (system:masters) user."""
    client: ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(cluster.kubeconfig)
    )
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]
