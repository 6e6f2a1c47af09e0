"""Fixtures of the workload tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scaleml_workloads.training import distributed
from scaleml_workloads.training.distributed import Topology


@pytest.fixture(scope="session")
def process_group() -> Iterator[Topology]:
    """This test process as a group of one (gloo on CPU), for tests that call the training code in-process."""
    topology = distributed.join()
    yield topology
    distributed.leave()
