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


def _with_values(column: str, values: dict[int, float]) -> pa.Table:
    """The churn table of 100 rows with `values` (by row) in `column`."""
    table = churn_table(100)
    numbers = table.column(column).to_numpy().astype(np.float64)
    for row, value in values.items():
        numbers[row] = value
    return table.set_column(table.schema.get_field_index(column), column, pa.array(numbers))


def _infinite_parquet(data: Path) -> None:
    write_parquet(data / "train.parquet", _with_values("b", {7: np.inf, 40: -np.inf}))


def _overflowing_parquet(data: Path) -> None:
    # Finite in float64, inf once the model's float32 tensors hold it.
    write_parquet(data / "train.parquet", _with_values("c", {12: 1e39}))


def _csv(data: Path, table: pa.Table) -> None:
    data.mkdir(parents=True)
    pacsv.write_csv(table, data / "train.csv")


def _infinite_csv(data: Path) -> None:
    _csv(data, churn_table(100))
    lines = (data / "train.csv").read_text().splitlines()
    # As a CSV writer spells them: "inf" and "-inf" in the column `a`.
    lines[4] = "inf," + lines[4].split(",", 1)[1]
    lines[9] = "-inf," + lines[9].split(",", 1)[1]
    (data / "train.csv").write_text("\n".join(lines) + "\n")


def _overflowing_csv(data: Path) -> None:
    _csv(data, _with_values("a", {3: -3.5e38, 5: 1e300}))


def _infinite_regression_target(data: Path) -> None:
    table = _with_values("c", {30: np.inf})
    _csv(data, table.drop_columns(["plan", "churned"]))


def _empty_text_cells_csv(data: Path) -> None:
    table = churn_table(100)
    plans = [None if row % 10 == 0 else plan for row, plan in enumerate(table.column("plan").to_pylist())]
    _csv(data, table.set_column(table.column_names.index("plan"), "plan", pa.array(plans, pa.string())))


def _infinite_npz(data: Path) -> None:
    data.mkdir(parents=True)
    images = np.zeros((10, 1, 4, 4), np.float64)
    images[6, 0, 2, 1] = np.inf
    np.savez(data / "train.npz", images=images, label=np.arange(10) % 2)


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
        "empty-csv-cells-of-a-text-column",
        _empty_text_cells_csv,
        {"data": {"source": "train.csv", "format": "csv"}},
        ("column 'plan' has 10.0% missing values", "more than checks.maxMissingFraction=0.0"),
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
        "infinite-feature-parquet",
        _infinite_parquet,
        {},
        ("feature column 'b' holds 2 values that float32 cannot hold", "the first at row 7: inf", "train to NaN"),
        ("--check",),
    ),
    Case(
        "float32-overflow-parquet",
        _overflowing_parquet,
        {},
        ("feature column 'c' holds 1 value that float32 cannot hold", "at row 12: 1e+39"),
        ("--check",),
    ),
    Case(
        "infinite-feature-csv",
        _infinite_csv,
        {"data": {"source": "train.csv", "format": "csv"}},
        ("train.csv", "feature column 'a' holds 2 values that float32 cannot hold", "at row 3: inf"),
        ("--check",),
    ),
    Case(
        "float32-overflow-csv",
        _overflowing_csv,
        {"data": {"source": "train.csv", "format": "csv"}},
        ("feature column 'a' holds 2 values that float32 cannot hold", "at row 3: -3.5e+38"),
        ("--check",),
    ),
    Case(
        "infinite-regression-target",
        _infinite_regression_target,
        {"data": {"source": "train.csv", "format": "csv", "target": "c"}, "model": {"task": "regression"}},
        ("target column 'c' holds 1 value that float32 cannot hold", "at row 30: inf"),
        ("--check",),
    ),
    Case(
        "infinite-npz-array",
        _infinite_npz,
        {"data": {"source": "train.npz", "format": "npz", "target": "label", "features": ["images"]}},
        ("feature array 'images' holds 1 value that float32 cannot hold", "at row 6: inf"),
        ("--check",),
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
