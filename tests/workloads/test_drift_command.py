"""`scaleml drift` as a user runs it: a real process on Parquet and CSV files, and on a profile training exported.

Exit status as diff's (0 no drift, 1 drift, 2 bad input, naming the file and column); columns
matched by name; `--html` writes the report the DriftMonitor serves.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pytest

from scaleml_api.v1alpha1 import driftmonitor as monitoring
from scaleml_operator.cli import main
from scaleml_workloads.drift import comparison
from scaleml_workloads.drift.comparison import compare_files
from scaleml_workloads.drift.detector import UNSEEN
from scaleml_workloads.monitor.report import render
from tests.workloads.runs import churn_table, write_parquet

pytestmark = pytest.mark.workloads

SCALEML = str(Path(sys.executable).parent / "scaleml")


def scaleml_drift(reference: Path, current: Path, *options: str) -> subprocess.CompletedProcess[str]:
    command = [SCALEML, "drift", "--reference", str(reference), "--current", str(current), *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def as_json(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert run.returncode in (0, 1), run.stderr
    wire: dict[str, Any] = json.loads(run.stdout)
    return wire


def shifted(table: pa.Table, column: str, by: float) -> pa.Table:
    index = table.column_names.index(column)
    return table.set_column(index, column, pc.add(table.column(column), by))


def write_csv(path: Path, table: pa.Table) -> Path:
    pacsv.write_csv(table, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reference and current tables (the churn data without its label), as Parquet and CSV."""
    root = tmp_path_factory.mktemp("tables")
    reference = churn_table(4000, seed=0).drop(["churned"])
    calm = churn_table(1500, seed=1).drop(["churned"])
    write_parquet(root / "reference.parquet", reference)
    write_parquet(root / "calm.parquet", calm)
    write_parquet(root / "shifted.parquet", shifted(calm, "a", 1.0))
    write_csv(root / "reference.csv", reference)
    write_csv(root / "calm.csv", calm)
    write_csv(root / "reordered.csv", calm.select(list(reversed(calm.column_names))))
    write_csv(root / "extra.csv", calm.append_column("churned", pa.array(["no"] * calm.num_rows)))
    write_csv(root / "without_b.csv", calm.drop(["b"]))
    # One stray word makes the whole column text.
    words = ["unknown", *(f"{value:.3f}" for value in calm.column("c").to_pylist()[1:])]
    strings = calm.set_column(calm.column_names.index("c"), "c", pa.array(words))
    write_csv(root / "c_as_strings.csv", strings)
    (root / "garbage.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (root / "semicolons.csv").write_text("a;b;c\n1;2;3\n")
    (root / "latin1.csv").write_bytes("a,b,c,town\n1,2,3,Montr\u00e9al\n".encode("latin-1"))
    return root


def test_a_parquet_pair_exits_0_without_drift_and_1_with_it(files: Path) -> None:
    calm = scaleml_drift(files / "reference.parquet", files / "calm.parquet", "--format", "json")
    assert calm.returncode == 0, calm.stderr
    result = as_json(calm)
    assert (result["driftDetected"], result["driftedFeatures"]) == (False, [])
    assert 0.0 <= result["driftScore"] < 0.5
    assert [f["name"] for f in result["features"]] == ["a", "b", "c", "tenure", "plan"]
    for f in result["features"]:
        assert {"test", "statistic", "pValue", "threshold", "drifted"} <= f.keys()
    assert next(f for f in result["features"] if f["name"] == "plan")["kind"] == "categorical"
    drifted = scaleml_drift(files / "reference.parquet", files / "shifted.parquet", "--format", "json")
    assert drifted.returncode == 1, drifted.stderr
    result = as_json(drifted)
    assert result["driftDetected"] is True
    assert result["driftedFeatures"] == ["a"]
    a = next(f for f in result["features"] if f["name"] == "a")
    assert (a["test"], a["drifted"]) == ("ks", True)
    assert a["pValue"] < 1e-10


def test_a_csv_pair_gives_the_same_verdict_in_any_column_order(files: Path) -> None:
    in_order = as_json(scaleml_drift(files / "reference.csv", files / "calm.csv", "--format", "json"))
    reordered = as_json(scaleml_drift(files / "reference.csv", files / "reordered.csv", "--format", "json"))
    assert reordered == in_order
    # The same values as Parquet: the same statistics.
    parquet = as_json(scaleml_drift(files / "reference.parquet", files / "calm.parquet", "--format", "json"))
    assert [f["statistic"] for f in in_order["features"]] == pytest.approx(
        [f["statistic"] for f in parquet["features"]]
    )


def test_an_extra_column_is_ignored_with_a_note(files: Path) -> None:
    run = scaleml_drift(files / "reference.csv", files / "extra.csv")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("no drift: 0 of 5 features drifted")
    assert "note: columns the reference has no feature for are ignored: churned" in run.stdout


@pytest.mark.parametrize(
    ("reference", "current", "options", "said"),
    [
        ("reference.csv", "nothing.csv", (), "nothing.csv: No such file or directory"),
        ("garbage.parquet", "calm.parquet", (), "garbage.parquet: cannot read it as Parquet"),
        ("reference.csv", "without_b.csv", (), "without_b.csv: there is no column 'b'"),
        (
            "reference.csv",
            "c_as_strings.csv",
            (),
            "c_as_strings.csv: column 'c' holds strings, but the reference's 'c'",
        ),
        ("reference.csv", "calm.csv", ("--features", "a,d"), "reference.csv: there is no column 'd'"),
        (
            "reference.csv",
            "semicolons.csv",
            (),
            "there is no column 'a' (the file's one column is named 'a;b;c': a CSV file is separated by commas",
        ),
        ("latin1.csv", "calm.csv", ("--features", "town"), "latin1.csv: column 'town' holds text that is not UTF-8"),
        ("reference.csv", "calm.csv", ("--html", "/nonexistent/report.html"), "/nonexistent/report.html: No such"),
        ("reference.csv", "calm.csv", ("--p-value", "2"), "--p-value: Input should be less than 1"),
        ("reference.csv", "calm.csv", ("--tests", "numeric=t"), "numeric: Input should be 'ks'"),
    ],
)
def test_bad_input_exits_2_naming_the_file_and_the_column(
    files: Path, reference: str, current: str, options: tuple[str, ...], said: str
) -> None:
    run = scaleml_drift(files / reference, files / current, *options)
    assert run.returncode == 2
    assert said in run.stderr
    assert run.stdout == ""


def test_an_unforeseen_error_exits_2_in_one_line_never_1_as_drift(
    files: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("the comparison broke\nand said more")

    monkeypatch.setattr(comparison, "compare_files", broken)
    command = ["drift", "--reference", str(files / "reference.csv"), "--current", str(files / "calm.csv")]
    assert main(command) == 2
    said = capsys.readouterr()
    assert said.err == "scaleml drift: error: RuntimeError: the comparison broke\n"
    assert said.out == ""


def test_a_reference_number_beyond_the_largest_float_is_invalid_and_said(files: Path, tmp_path: Path) -> None:
    header, first, *rows = (files / "reference.csv").read_text().splitlines()
    cells = first.split(",")
    cells[header.split(",").index('"a"')] = "1e309"
    reference = tmp_path / "reference.csv"
    reference.write_text("\n".join([header, ",".join(cells), *rows]) + "\n")
    run = scaleml_drift(reference, files / "calm.csv")
    assert run.returncode == 0, run.stderr
    assert "note: reference: 1 values of 'a' are ±inf (counted as missing)" in run.stdout


def test_html_writes_the_report_the_monitor_serves(files: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    run = scaleml_drift(files / "reference.parquet", files / "shifted.parquet", "--html", str(page))
    assert run.returncode == 1, run.stderr
    written = page.read_text()
    reference, current = files / "reference.parquet", files / "shifted.parquet"
    result = compare_files(reference, current, (), monitoring.Tests(), monitoring.Thresholds())
    title = f"{current} against {reference}"
    expected = render(result, monitor=title, checked_at=datetime.now(UTC), reference_version=None, trend=[])
    when = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC")
    assert when.sub("TIME", written) == when.sub("TIME", expected)
    assert '<span class="drift">drift detected</span>' in written
    assert 'id="feature-a"' in written


def test_a_profile_exported_by_training_is_a_reference(exported_model: Path, tmp_path: Path) -> None:
    profile = exported_model / "1" / "profile.json"
    traffic = churn_table(1500, seed=9)  # with its label column: extra
    calm = scaleml_drift(profile, write_parquet(tmp_path / "calm.parquet", traffic), "--format", "json")
    assert calm.returncode == 0, calm.stdout + calm.stderr
    result = as_json(calm)
    assert [f["name"] for f in result["features"]] == ["a", "b", "c", "tenure", "plan"]
    assert "columns the reference has no feature for are ignored: churned" in result["messages"]
    moved = write_parquet(
        tmp_path / "moved.parquet", shifted(traffic, "c", 1.5).select(["plan", "c", "b", "a", "tenure"])
    )
    drifted = scaleml_drift(profile, moved, "--format", "json")
    assert drifted.returncode == 1, drifted.stderr
    assert as_json(drifted)["driftedFeatures"] == ["c"]
    assert scaleml_drift(profile, profile).returncode == 2


# Prices (decimals) on both sides, unchanged: float64 in a CSV, float32 in a Parquet file or in the profile
# training makes of its float32 features. Compared at their own precisions, every price drifted (p ~1e-80).
# Per feature: the multivariate test's distances do not see a difference of one float32 rounding.
def test_the_same_decimals_at_float32_and_float64_are_no_drift(tmp_path: Path) -> None:
    per_feature = ("--tests", "multivariate=none")
    rng = np.random.default_rng(1)

    def table(rows: int, dtype: type[np.floating[Any]]) -> pa.Table:
        price = rng.choice([9.99, 19.99, 29.99, 49.99], size=rows)
        amount = np.round(rng.gamma(2.0, 30.0, size=rows), 2)
        return pa.table({"price": price.astype(dtype), "amount": amount.astype(dtype)})

    reference = write_csv(tmp_path / "reference.csv", table(5000, np.float64))
    float32 = write_parquet(tmp_path / "current.parquet", table(2000, np.float32))
    assert scaleml_drift(reference, float32, *per_feature).returncode == 0
    profile = tmp_path / "profile.json"
    saved = scaleml_drift(
        write_parquet(tmp_path / "reference.parquet", table(5000, np.float32)),
        float32,
        "--save-profile",
        str(profile),
        *per_feature,
    )
    assert saved.returncode == 0, saved.stdout + saved.stderr
    csv = write_csv(tmp_path / "current.csv", table(2000, np.float64))
    assert scaleml_drift(profile, csv, *per_feature).returncode == 0


def test_the_json_has_no_value_json_cannot_hold(files: Path) -> None:
    values = np.full(1500, np.nan)
    values[:10] = 1.0
    table = churn_table(1500, seed=2).drop(["churned"])
    sparse = table.set_column(table.column_names.index("b"), "b", pa.array(values, from_pandas=True))
    run = scaleml_drift(
        files / "reference.parquet", write_parquet(files / "sparse.parquet", sparse), "--format", "json"
    )
    result = as_json(run)
    assert run.returncode == 1
    assert "b" in result["driftedFeatures"]
    assert "NaN" not in run.stdout


def test_empty_csv_cells_of_a_text_column_are_missing(files: Path, tmp_path: Path) -> None:
    table = churn_table(1500, seed=3).drop(["churned"])
    plans = [None if row % 5 == 0 else plan for row, plan in enumerate(table.column("plan").to_pylist())]
    gaps = write_csv(tmp_path / "gaps.csv", table.set_column(table.column_names.index("plan"), "plan", pa.array(plans)))

    result = compare_files(files / "reference.csv", gaps, (), monitoring.Tests(), monitoring.Thresholds())

    plan = next(feature for feature in result.features if feature.name == "plan")
    assert plan.missing_fraction == pytest.approx(0.2)
    assert (plan.test, plan.drifted) == ("missing", True)
    assert UNSEEN not in plan.bins or plan.current_frequencies[plan.bins.index(UNSEEN)] == 0.0


def test_a_saved_profile_of_the_reference_gives_the_result_of_the_table(files: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    with_table = scaleml_drift(
        files / "reference.csv", files / "shifted.parquet", "--save-profile", str(profile), "--format", "json"
    )
    with_profile = scaleml_drift(profile, files / "shifted.parquet", "--format", "json")
    assert with_table.returncode == with_profile.returncode == 1
    # The profile keeps every one of the reference's 4000 rows in its sample (at most 5000): the same statistics.
    assert as_json(with_profile) == as_json(with_table)
    written = json.loads(profile.read_text())
    assert written["source"] == str(files / "reference.csv")
    assert "target" not in written or written["target"] is None
    assert (
        scaleml_drift(profile, files / "calm.parquet", "--save-profile", str(tmp_path / "again.json")).returncode == 2
    )
