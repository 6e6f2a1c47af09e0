"""Fixtures for the node tier: the session's control plane plus one real node that runs containers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.node import host
from tests.support.node.images import busybox_rootfs, oci_archive
from tests.support.node.node import RealNode, find_node_binaries
from tests.support.requirements import skip_or_fail

#: The image the tier's own pods run: busybox, imported into the node (nothing is pulled).
BUSYBOX_IMAGE = "scaleml.dev/busybox:1"


class NodeRun:
    """The node, and the host as it was before the node started (to compare with after it stopped)."""

    def __init__(self, node: RealNode, before: host.HostState) -> None:
        self.node = node
        self.before = before


@pytest.fixture(scope="session")
def node_run(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRun]:
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
        node.import_image(oci_archive(rootfs, BUSYBOX_IMAGE, workdir / "busybox.oci.tar"))
        yield NodeRun(node, before)
    finally:
        node.stop()


@pytest.fixture(scope="session")
def real_node(node_run: NodeRun) -> RealNode:
    return node_run.node

