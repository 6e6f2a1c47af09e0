"""Bad data or spec ends the worker with EXIT_INVALID_INPUT and a message naming the column and the problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pytest

from scaleml_api.runtime import EXIT_INVALID_INPUT
from tests.workloads.runs import churn_table, run, training_run, workload, workload_env, write_config, write_parquet

pytestmark = pytest.mark.workloads


def _parquet(table: pa.Table) -> Callable[[Path], object]:
    return lambda data: write_parquet(data / "train.parquet", table)


def _empty_file(data: Path) -> None:
    data.mkdir(parents=True)
    (data / "train.parquet").write_bytes(b"")


def _header_only_csv(data: Path) -> None:
    data.mkdir(parents=True)
    (data / "train.csv").write_text("a,b,churned\n")


def _with_timestamps(data: Path) -> None:
    table = churn_table(100)
    signup = pa.array(np.arange(100).astype("datetime64[s]"))
    write_parquet(data / "train.parquet", table.append_column("signup", signup))


def _one_class(data: Path) -> None:
    table = churn_table(100)
    write_parquet(data / "train.parquet", table.set_column(5, "churned", pa.array(["no"] * 100)))


def _images_npz(data: Path) -> None:
    data.mkdir(parents=True)
    np.savez(data / "train.npz", images=np.zeros((10, 1, 4, 4), np.float32), label=np.arange(10) % 2)


def _strings_csv(data: Path) -> None:
    data.mkdir(parents=True)
    pacsv.write_csv(pa.table({"x": [1.0, 2.0, 3.0], "price": ["low", "high", "low"]}), data / "train.csv")


@dataclass(frozen=True)
class Case:
    id: str
    write: Callable[[Path], object]
    spec: dict[str, Any]
    expected: tuple[str, ...]
    args: tuple[str, ...] = field(default=())


CASES = [
    Case(
        "missing-file",
        _parquet(churn_table(10)),
        {"data": {"source": "nope.parquet"}},
        ("nope.parquet", "does not exist"),
    ),
    Case("empty-file", _empty_file, {}, ("train.parquet", "is empty")),
    Case("no-rows", _header_only_csv, {"data": {"source": "train.csv", "format": "csv"}}, ("train.csv", "has no rows")),
    Case(
        "missing-target",
        _parquet(churn_table(10)),
        {"data": {"target": "left"}},
        ("target column 'left' not found", "available columns: a, b, c, tenure, plan, churned"),
    ),
    Case(
        "missing-feature",
        _parquet(churn_table(10)),
        {"data": {"features": ["a", "income", "age"]}},
        ("feature columns 'income', 'age' not found", "available columns: a, b"),
    ),
    Case(
        "unsupported-feature-type",
        _with_timestamps,
        {},
        ("feature column 'signup' has type timestamp", "neither numeric nor a string"),
    ),
    Case(
        "too-many-missing-values",
        _parquet(churn_table(1000, missing=0.3)),
        {"data": {"checks": {"maxMissingFraction": 0.1}}},
        ("column 'b' has 28.9% missing values", "more than checks.maxMissingFraction=0.1"),
    ),
    Case(
        "too-few-rows",
        _parquet(churn_table(50)),
        {"data": {"checks": {"minRows": 100}}},
        ("has 50 rows", "fewer than checks.minRows=100"),
    ),
    Case("single-class", _one_class, {}, ("target column 'churned'", "single class ('no')", "at least 2")),
    Case(
        "missing-npz-array",
        _images_npz,
        {"data": {"source": "train.npz", "format": "npz", "target": "label", "features": ["pixels"]}},
        ("feature arrays 'pixels' not found", "available arrays: images, label"),
    ),
    Case(
        "non-numeric-regression-target",
        _strings_csv,
        {"data": {"source": "train.csv", "format": "csv", "target": "price"}, "model": {"task": "regression"}},
        ("target column 'price'", "regression needs a numeric target"),
    ),
    Case(
        "custom-entrypoint-not-importable",
        _parquet(churn_table(10)),
        {"model": {"architecture": "custom", "entrypoint": "nowhere.models:build", "params": {}}},
        ("model.entrypoint 'nowhere.models:build' cannot be imported", "No module named 'nowhere'"),
        ("--check",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_invalid_input_fails_at_once_naming_the_problem(tmp_path: Path, case: Case) -> None:
    case.write(tmp_path / "data")
    config = write_config(tmp_path / "run.json", training_run(tmp_path, case.spec))
    termination_log = tmp_path / "termination-log"

    result = run(workload(config, *case.args), workload_env(termination_log))

    assert result.returncode == EXIT_INVALID_INPUT, result.stderr
    message = termination_log.read_text()
    for fragment in case.expected:
        assert fragment in message
    assert message in result.stderr


def test_check_accepts_a_valid_run_without_training(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(100))
    config = write_config(tmp_path / "run.json", training_run(tmp_path))

    result = run(workload(config, "--check"), workload_env(tmp_path / "termination-log"))

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "models").exists()
