"""Fixtures of the workload tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scaleml_workloads.training import distributed
from scaleml_workloads.training.distributed import Topology
from tests.workloads.runs import export_churn_model


@pytest.fixture(scope="session")
def process_group() -> Iterator[Topology]:
    """This test process as a group of one (gloo on CPU), for tests that call the training code in-process."""
    topology = distributed.join()
    yield topology
    distributed.leave()


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model directory of a real run of the churn model with version 1 exported; read only."""
    return export_churn_model(tmp_path_factory.mktemp("exported"), "run.json", epochs=2)
