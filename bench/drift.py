"""Speed of the drift statistics engine against a SciPy loop and against Evidently, on the same data.

The data: a reference of 100,000 rows and a window of 1,000,000 rows, 50 numeric features each,
float32 as captured. Most features are drawn from the reference's distribution; some moved a
little, so the p-values spread between 0 and 1. On this data, in this one process:

- the engine (`scaleml_workloads.drift`): the reference prepared once (`Reference.from_arrays`,
  `DriftDetector`), then one check of the window with the KS test on every feature; then the
  same with PSI and with Wasserstein;
- SciPy: `scipy.stats.ks_2samp` column by column (and `wasserstein_distance` for Wasserstein);
- Evidently (Apache-2.0, 0.7): a `Report` with `DataDriftPreset(method="ks")`, which runs the same
  KS test (SciPy's ks_2samp, per column) on pandas columns;
- `scaleml drift`: the same KS check as a user runs it on the same data written to Parquet, one
  process from start to exit (loading torch, reading both files, profiling the reference,
  encoding the window by column name, the check, the JSON); its statistics are checked against
  the engine's.

At these sizes both samples have over 10,000 values, so the engine and ks_2samp (method "auto")
both use the asymptotic distribution for the p-values. The engine's statistics are checked
against SciPy's and its p-values against Evidently's. Engine timings are the best of a few
repeats (other load on the machine only slows a run down); SciPy and Evidently run once, as they
take minutes. Evidently runs on all features when its estimated time (from 5 features) is under
PEER_BUDGET seconds, otherwise on a subset, its time scaled to all features, as the output says.
Run with `make bench`.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import evidently  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import scipy  # type: ignore[import-untyped]
import torch
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset  # type: ignore[import-untyped]
from scipy import stats

from scaleml_api.v1alpha1.driftmonitor import Tests, Thresholds
from scaleml_workloads.drift.detector import DriftDetector, DriftResult
from scaleml_workloads.drift.reference import Reference

REFERENCE_ROWS = 100_000
WINDOW_ROWS = 1_000_000
FEATURES = 50
REPEATS = 3
PEER_BUDGET = 180.0
PROBE_FEATURES = 5

T = TypeVar("T")
Array = npt.NDArray[Any]


def data() -> tuple[Array, Array]:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(REFERENCE_ROWS, FEATURES)).astype(np.float32)
    window = rng.normal(size=(WINDOW_ROWS, FEATURES))
    # Every fifth feature moves a little, by up to 0.01 standard deviations: p-values from about 1 to below 1e-3.
    window[:, ::5] += np.linspace(0.0, 0.01, len(range(0, FEATURES, 5)))
    return reference, window.astype(np.float32)


def timed(function: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def best(function: Callable[[], T]) -> tuple[float, T]:
    runs = [timed(function) for _ in range(REPEATS)]
    return min(seconds for seconds, _ in runs), runs[-1][1]


def engine(
    reference: Array, window: Array, test: Literal["ks", "psi", "wasserstein"]
) -> tuple[float, float, DriftResult]:
    """Seconds to prepare the reference, seconds per check, the result."""
    tests = Tests(numeric=test, multivariate="none")

    def prepare() -> DriftDetector:
        return DriftDetector(Reference.from_arrays(reference), tests, Thresholds())

    build, detector = best(prepare)
    check, result = best(lambda: detector.check({"INPUT__0": window}))
    return build, check, result


def peer(reference: Array, window: Array, columns: list[int]) -> tuple[float, dict[str, float]]:
    """Seconds for an Evidently KS report over `columns`, and its p-value per column."""
    names = [f"x{column}" for column in columns]

    def run() -> Any:
        definition = DataDefinition(numerical_columns=names)
        current = Dataset.from_pandas(pd.DataFrame(window[:, columns], columns=names), data_definition=definition)
        past = Dataset.from_pandas(pd.DataFrame(reference[:, columns], columns=names), data_definition=definition)
        return Report([DataDriftPreset(method="ks", threshold=0.01)]).run(current, past)

    seconds, snapshot = timed(run)
    p_values = {
        metric["config"]["column"]: float(metric["value"])
        for metric in snapshot.dict()["metrics"]
        if metric["config"].get("type") == "evidently:metric_v2:ValueDrift"
    }
    return seconds, p_values


def command(reference: Array, window: Array) -> tuple[float, dict[str, float]]:
    """Seconds of one `scaleml drift` process on the data as Parquet files, and its KS statistic per column."""
    with tempfile.TemporaryDirectory() as directory:
        files = []
        for name, table in (("reference", reference), ("current", window)):
            path = Path(directory) / f"{name}.parquet"
            pq.write_table(pa.table({f"x{column}": table[:, column] for column in range(FEATURES)}), path)
            files.append(str(path))
        scaleml = str(Path(sys.executable).parent / "scaleml")
        options = ["--tests", "numeric=ks,multivariate=none", "--format", "json"]
        seconds, run = timed(
            lambda: subprocess.run(
                [scaleml, "drift", "--reference", files[0], "--current", files[1], *options],
                capture_output=True,
                text=True,
                check=False,
            )
        )
    assert run.returncode in (0, 1), run.stderr
    return seconds, {feature["name"]: feature["statistic"] for feature in json.loads(run.stdout)["features"]}


def number(value: float | None) -> float:
    assert value is not None, "the engine gave no statistic"
    return value


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    reference, window = data()
    print(f"data: reference {REFERENCE_ROWS} x {FEATURES}, window {WINDOW_ROWS} x {FEATURES}, float32")
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}, "
        f"scipy {scipy.__version__}, evidently {evidently.__version__}"
    )

    ks_build, ks_check, ks = engine(reference, window, "ks")
    psi_build, psi_check, _ = engine(reference, window, "psi")
    w_build, w_check, wasserstein = engine(reference, window, "wasserstein")

    scipy_ks_seconds, scipy_ks = timed(lambda: [stats.ks_2samp(reference[:, f], window[:, f]) for f in range(FEATURES)])
    # In float64: on float32 input SciPy rounds the gaps between values to float32.
    scipy_w_seconds, scipy_w = timed(
        lambda: [
            stats.wasserstein_distance(reference[:, f].astype(np.float64), window[:, f].astype(np.float64))
            for f in range(FEATURES)
        ]
    )

    probe_seconds, _ = peer(reference, window, list(range(PROBE_FEATURES)))
    estimate = probe_seconds * FEATURES / PROBE_FEATURES
    if estimate <= PEER_BUDGET:
        peer_columns = list(range(FEATURES))
    else:
        peer_columns = list(range(max(PROBE_FEATURES, round(FEATURES * PEER_BUDGET / estimate))))
    peer_measured, peer_p = peer(reference, window, peer_columns)
    command_seconds, command_statistic = command(reference, window)
    peer_seconds = peer_measured * FEATURES / len(peer_columns)

    statistic = {f.name: number(f.statistic) for f in ks.features}
    p_value = {f.name: number(f.p_value) for f in ks.features}
    statistic_gap = max(abs(statistic[f"x{f}"] - scipy_ks[f].statistic) for f in range(FEATURES))
    p_gap = max(abs(p_value[f"x{f}"] - scipy_ks[f].pvalue) for f in range(FEATURES))
    peer_gap = max(abs(p_value[name] - p) for name, p in peer_p.items())
    command_gap = max(abs(statistic[name] - command_statistic[name]) for name in statistic)
    # The engine reports Wasserstein in reference standard deviations.
    std = reference.std(axis=0, dtype=np.float64)
    distance = {f.name: number(f.statistic) for f in wasserstein.features}
    w_gap = max(abs(distance[f"x{f}"] * std[f] - scipy_w[f]) / scipy_w[f] for f in range(FEATURES))
    p_values = list(p_value.values())

    both = ks_build + ks_check
    scope = (
        "all 50 features"
        if len(peer_columns) == FEATURES
        else f"MEASURED ON {len(peer_columns)} FEATURES ({peer_measured:.1f} s), SCALED TO 50"
    )
    print(f"KS p-values {min(p_values):.2g} .. {max(p_values):.2g}: asymptotic, as ks_2samp's 'auto' at these sizes")
    print()
    print(f"{'KS on all 50 features':44} {'seconds':>8}   engine faster by")
    row("engine: check, reference prepared", ks_check)
    row("engine: reference preparation (once)", ks_build)
    row("engine: preparation + check", both)
    row("scipy.stats.ks_2samp per column", scipy_ks_seconds, speedups(scipy_ks_seconds, ks_check, both))
    row("Evidently DataDriftPreset(method='ks')", peer_seconds, f"{speedups(peer_seconds, ks_check, both)}  [{scope}]")
    row("scaleml drift on the Parquet files", command_seconds, "one process: start, read, profile, encode, check")
    print()
    print(f"{'other tests on all 50 features':44} {'seconds':>8}")
    row("engine: PSI check (reference deciles)", psi_check, f"preparation {psi_build:.2f} s")
    row("engine: Wasserstein check", w_check, f"preparation {w_build:.2f} s")
    row("scipy.stats.wasserstein_distance per column", scipy_w_seconds, f"{scipy_w_seconds / w_check:.1f}x check")
    print()
    print("agreement")
    print(f"  KS statistic, engine vs scipy: max |difference| {statistic_gap:.2e} ({verdict(statistic_gap, 1e-9)})")
    print(f"  KS p-value, engine vs scipy: max |difference| {p_gap:.2e} ({verdict(p_gap, 1e-6)})")
    print(f"  KS p-value, engine vs Evidently ({len(peer_p)} features): max |difference| {peer_gap:.2e}")
    print(
        f"  KS statistic, engine vs scaleml drift: max |difference| {command_gap:.2e} ({verdict(command_gap, 1e-12)})"
    )
    print(f"  Wasserstein, engine vs scipy in float64: max relative difference {w_gap:.2e}")


def row(label: str, seconds: float, note: str = "") -> None:
    print(f"  {label:42} {seconds:8.2f}   {note}")


def speedups(seconds: float, check: float, both: float) -> str:
    return f"{seconds / check:.1f}x the check, {seconds / both:.1f}x preparation + check"


def verdict(gap: float, tolerance: float) -> str:
    return f"{'ok' if gap <= tolerance else 'FAIL'}: tolerance {tolerance:g}"


if __name__ == "__main__":
    main()
