"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controlplane import API_TIER, ControlPlane, MissingBinariesError, find_binaries
from tests.support.requirements import skip_or_fail

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's one control plane, with its API tier (etcd + kube-apiserver) started.

    Used directly by tests/apiserver, and by the ``cluster`` fixture (tests/e2e), which adds
    the nodes tier to this same process set on first use. Skips, naming the missing binaries, when they
    are not installed (``make control-plane`` builds them). Set ``SCALEML_CONTROL_PLANE_WORKDIR`` to keep
    the component logs, PKI and kubeconfigs in that directory after the run.
    """
    binaries = find_binaries()
    missing = binaries.missing(API_TIER)
    if missing:
        skip_or_fail(str(MissingBinariesError(missing, binaries.searched)))
    workdir = os.environ.get("SCALEML_CONTROL_PLANE_WORKDIR")
    plane = ControlPlane(binaries, workdir=Path(workdir) if workdir else None)
    try:
        plane.start_api()
        yield plane
    finally:
        plane.stop()
