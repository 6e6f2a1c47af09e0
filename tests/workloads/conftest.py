"""Fixtures of the workload tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scaleml_workloads.training import distributed
from scaleml_workloads.training.distributed import Topology
from tests.workloads.runs import (
    MODEL_NAME,
    churn_table,
    run,
    training_run,
    workload,
    workload_env,
    write_config,
    write_parquet,
)


@pytest.fixture(scope="session")
def process_group() -> Iterator[Topology]:
    """This test process as a group of one (gloo on CPU), for tests that call the training code in-process."""
    topology = distributed.join()
    yield topology
    distributed.leave()


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model directory of a real run of the churn model with version 1 exported; read only."""
    root = tmp_path_factory.mktemp("exported")
    write_parquet(root / "data" / "train.parquet", churn_table(2000))
    config = write_config(root / "run.json", training_run(root, {"checkpoint": None, "hyperparameters": {"epochs": 2}}))
    result = run(workload(config), workload_env(root / "termination-log"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "models" / MODEL_NAME
