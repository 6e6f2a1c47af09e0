"""The drift tests are calibrated and have power: false alarms at the configured rate, stated shifts found.

Calibration: windows drawn from the reference's own distribution, a fresh reference per trial
(so the trials are independent), many independent features per window. The count of false
alarms out of N tests is then Binomial(N, alpha); each check allows 3.5 binomial standard
deviations around N alpha (a chance of about 1 in 2000 to fail for a calibrated test).

Power: stated shifts at stated window sizes against references of MAX_SAMPLE_ROWS rows (what a
profile holds), detected at least at the stated rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest

from scaleml_api.profile import MAX_SAMPLE_ROWS
from scaleml_api.v1alpha1 import driftmonitor as monitoring
from scaleml_workloads.drift.detector import DriftDetector, DriftResult
from scaleml_workloads.drift.reference import Reference

pytestmark = pytest.mark.workloads

Floats = npt.NDArray[np.float64]
Draw = Callable[[np.random.Generator, int, int], Floats]
FEATURES = 25
PLANS = [0.5, 0.3, 0.2]


def mixed(rng: np.random.Generator, rows: int, features: int) -> Floats:
    """Independent features of four shapes in turn: normal, heavy-tailed, skewed, bounded."""
    shapes: list[Callable[[], Floats]] = [
        lambda: rng.normal(size=rows),
        lambda: rng.standard_t(3, size=rows),
        lambda: rng.exponential(size=rows),
        lambda: rng.uniform(size=rows),
    ]
    return np.stack([shapes[feature % 4]() for feature in range(features)], axis=1)


def lognormal(rng: np.random.Generator, rows: int, features: int) -> Floats:
    """Heavy-tailed: equal-width bins over its range put 98% of it into the first."""
    return rng.lognormal(0.0, 2.5, size=(rows, features))


def zipf(size: int, exponent: float) -> Floats:
    """Frequencies of `size` categories falling as rank ** -exponent."""
    weights = 1 / np.arange(1, size + 1, dtype=np.float64) ** exponent
    return weights / float(weights.sum())


def normal(mean: float = 0.0, variance: float = 1.0) -> Draw:
    return lambda rng, rows, features: rng.normal(mean, math.sqrt(variance), size=(rows, features))


def categories(frequencies: Sequence[float]) -> Draw:
    return lambda rng, rows, features: rng.choice(len(frequencies), size=(rows, features), p=frequencies).astype(
        np.float64
    )


def checks(
    trials: int,
    reference: Draw,
    window: Draw,
    reference_rows: int,
    window_rows: int,
    tests: monitoring.Tests,
    p_value: float,
    *,
    features: int = FEATURES,
    levels: int = 0,
    mmd_rows: int = 1000,
    mmd_permutations: int = 500,
    window_dtype: type[np.floating[Any]] = np.float32,
) -> list[DriftResult]:
    """One check per trial, each against a fresh reference; windows as the capture files hold them (float32),
    or at `window_dtype`.

    `levels`: the features are categorical with that many categories, codes 0 to levels - 1; 0, numeric.
    """
    names = [f"x{index}" for index in range(features)]
    kinds: Mapping[str, Sequence[str]] = (
        {name: [f"c{code}" for code in range(levels)] for name in names} if levels else {}
    )
    results = []
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        detector = DriftDetector(
            Reference.from_arrays(reference(rng, reference_rows, features), names, kinds),
            tests,
            monitoring.Thresholds(p_value=p_value),
            seed=trial,
            mmd_rows=mmd_rows,
            mmd_permutations=mmd_permutations,
        )
        results.append(detector.check({"INPUT__0": window(rng, window_rows, features).astype(window_dtype)}))
    return results


def feature_alarms(results: list[DriftResult], alpha: float) -> tuple[int, int]:
    """Raw p-values of the features' tests below `alpha`, and the tests: each test's own calibration."""
    p_values = [feature.tests[0].p_value for result in results for feature in result.features]
    return sum(p is not None and p < alpha for p in p_values), len(p_values)


def assert_calibrated(alarms: int, tests: int, alpha: float) -> None:
    expected = tests * alpha
    tolerance = 3.5 * math.sqrt(tests * alpha * (1 - alpha))
    assert abs(alarms - expected) <= tolerance, (
        f"{alarms} false alarms in {tests} tests, expected {expected:.0f} ± {tolerance:.0f}"
    )


def assert_within_rate(alarms: int, tests: int, alpha: float) -> None:
    """No more false alarms than the rate allows (3.5 binomial standard deviations); fewer may be."""
    assert alarms <= tests * alpha + 3.5 * math.sqrt(tests * alpha * (1 - alpha)), f"{alarms} false alarms in {tests}"


KS = monitoring.Tests(numeric="ks", multivariate="none")
CHI2 = monitoring.Tests(categorical="chi2", multivariate="none")
JS = monitoring.Tests(numeric="js", multivariate="none")
MMD = monitoring.Tests(numeric="ks", multivariate="mmd")


@pytest.mark.parametrize(
    ("window_rows", "trials"),
    [
        (1000, 40),  # exact p-values (no sample over 10,000 values)
        (20_000, 20),  # asymptotic p-values
    ],
)
def test_ks_false_alarms_match_the_p_value_threshold(window_rows: int, trials: int) -> None:
    results = checks(trials, mixed, mixed, MAX_SAMPLE_ROWS, window_rows, KS, 0.05)
    assert_calibrated(*feature_alarms(results, 0.05), 0.05)


def test_ks_finds_a_mean_shift_of_a_fifth_of_a_standard_deviation_in_1000_rows() -> None:
    alarms, tests = feature_alarms(checks(8, normal(), normal(mean=0.2), MAX_SAMPLE_ROWS, 1000, KS, 0.01), 0.01)
    assert alarms / tests >= 0.9


def test_ks_finds_a_variance_half_as_large_again_in_5000_rows() -> None:
    alarms, tests = feature_alarms(checks(8, normal(), normal(variance=1.5), MAX_SAMPLE_ROWS, 5000, KS, 0.01), 0.01)
    assert alarms / tests >= 0.9


def flags(share: float) -> Draw:
    """0/1 flags, 1 with probability `share`."""
    return lambda rng, rows, features: (rng.uniform(size=(rows, features)) < share).astype(np.float64)


def ratings(rng: np.random.Generator, rows: int, features: int) -> Floats:
    return rng.integers(1, 6, size=(rows, features)).astype(np.float64)


def poisson_counts(rng: np.random.Generator, rows: int, features: int) -> Floats:
    return rng.poisson(1.5, size=(rows, features)).astype(np.float64)


# Features of few distinct values: ks tests them on their counts (chi-square), where Kolmogorov-Smirnov's
# null, which assumes no ties, kept far below the rate (0 of 1000 p-values below 0.05 for 2% flags, 11
# for ratings 1-5, 6 for Poisson(1.5) counts) and missed changes.
@pytest.mark.parametrize("shape", [flags(0.02), ratings, poisson_counts], ids=["flags", "ratings", "poisson"])
def test_ks_false_alarms_match_the_p_value_threshold_on_features_of_few_values(shape: Draw) -> None:
    results = checks(40, shape, shape, MAX_SAMPLE_ROWS, 2000, KS, 0.05)
    assert_calibrated(*feature_alarms(results, 0.05), 0.05)
    assert any(feature.test == "chi2" for result in results for feature in result.features)


def test_ks_finds_a_flag_going_from_2_to_4_percent_in_2000_rows() -> None:
    alarms, tests = feature_alarms(
        checks(20, flags(0.02), flags(0.04), MAX_SAMPLE_ROWS, 2000, KS, 0.01, features=5), 0.01
    )
    assert alarms / tests >= 0.9


@pytest.mark.parametrize("shape", [mixed, lognormal])
@pytest.mark.parametrize("window_rows", [1000, 5000])
def test_js_false_alarms_match_the_p_value_threshold(shape: Draw, window_rows: int) -> None:
    results = checks(20, shape, shape, MAX_SAMPLE_ROWS, window_rows, JS, 0.05, features=10)
    assert_calibrated(*feature_alarms(results, 0.05), 0.05)


def test_js_finds_every_value_of_a_heavy_tailed_feature_tripled_in_2000_rows() -> None:
    def tripled(rng: np.random.Generator, rows: int, features: int) -> Floats:
        return 3 * lognormal(rng, rows, features)

    results = checks(8, lognormal, tripled, MAX_SAMPLE_ROWS, 2000, JS, 0.01, features=5)
    assert all(feature.drifted for result in results for feature in result.features)


def test_chi2_false_alarms_match_the_p_value_threshold() -> None:
    results = checks(40, categories(PLANS), categories(PLANS), 20_000, 2000, CHI2, 0.05, levels=len(PLANS))
    assert_calibrated(*feature_alarms(results, 0.05), 0.05)


def test_chi2_finds_three_points_of_frequency_moved_in_5000_rows() -> None:
    moved = categories([0.47, 0.3, 0.23])
    results = checks(8, categories(PLANS), moved, 20_000, 5000, CHI2, 0.01, levels=len(PLANS))
    alarms, tests = feature_alarms(results, 0.01)
    assert alarms / tests >= 0.9


# Beyond the categories a profile lists: equally frequent ones, and a long tail (Zipf, exponent 0.8) where
# many listed categories are rare, which the Jensen-Shannon distance's null is sensitive to.
@pytest.mark.parametrize(
    ("frequencies", "tested"),
    [(np.full(1200, 1 / 1200), ["chi2"]), (zipf(3000, 0.8), ["chi2", "js"])],
    ids=["uniform-1200", "zipf-3000"],
)
def test_false_alarms_match_the_p_value_threshold_beyond_the_listed_categories_and_a_shift_is_found(
    frequencies: Floats, tested: list[Literal["chi2", "js"]]
) -> None:
    levels = len(frequencies)
    draw = categories(list(frequencies))
    for test in tested:
        tests = monitoring.Tests(categorical=test, multivariate="none")
        results = checks(20, draw, draw, 50_000, 5000, tests, 0.05, features=5, levels=levels)
        assert_calibrated(*feature_alarms(results, 0.05), 0.05)
    moved = frequencies.copy()
    moved[100:160] *= 2  # sixty listed categories twice as frequent
    shifted = categories(list(moved / moved.sum()))
    alarms, tests_run = feature_alarms(
        checks(8, draw, shifted, 50_000, 10_000, CHI2, 0.01, features=5, levels=levels), 0.01
    )
    assert alarms / tests_run >= 0.9


# Every category listed, many of them rare: 10,000 reference rows of 1,000 Zipf-distributed categories
# miss a few dozen of them, which windows then hold. Drawn from the reference's frequencies alone, the
# distances' nulls took those for drift (Jensen-Shannon: 65 of 100 features at p < 0.05, PSI 39).
@pytest.mark.parametrize("test", ["js", "psi"])
def test_distance_false_alarms_match_the_p_value_threshold_with_rare_categories_the_reference_missed(
    test: Literal["js", "psi"],
) -> None:
    draw = categories(list(zipf(1000, 0.8)))
    tests = monitoring.Tests(categorical=test, multivariate="none")
    results = checks(12, draw, draw, 10_000, 1000, tests, 0.05, features=5, levels=1000)
    assert_calibrated(*feature_alarms(results, 0.05), 0.05)


PRICES = [9.99, 19.99, 29.99, 49.99]


def prices(frequencies: Sequence[float], dtype: type[np.floating[Any]] = np.float64) -> Draw:
    """Prices (decimals, which float32 and float64 hold as different numbers), held at `dtype`."""

    def draw(rng: np.random.Generator, rows: int, features: int) -> Floats:
        chosen = rng.choice(PRICES, size=(rows, features), p=frequencies)
        return chosen.astype(dtype).astype(np.float64)

    return draw


def amounts(dtype: type[np.floating[Any]]) -> Draw:
    """Amounts in cents (many distinct decimals), held at `dtype`."""
    return lambda rng, rows, features: np.round(rng.gamma(2.0, 30.0, size=(rows, features)), 2).astype(dtype)


# The same decimals held at float32 on one side and float64 on the other: compared as they were, every
# tied value fell on the wrong side of the other side's steps and edges (prices: every feature at p ~1e-80).
# A float64 reference against float32 windows (a reference built from float64 data, the monitor's captures)
# and a reference of float32 values (a profile training made) against float64 windows (a CSV).
@pytest.mark.parametrize(
    "tests", [KS, JS, monitoring.Tests(numeric="psi", multivariate="none")], ids=["ks", "js", "psi"]
)
@pytest.mark.parametrize(
    ("reference_dtype", "window_dtype"),
    [(np.float64, np.float32), (np.float32, np.float64)],
    ids=["f64-f32", "f32-f64"],
)
def test_decimals_at_float32_on_one_side_and_float64_on_the_other_are_no_drift(
    tests: monitoring.Tests, reference_dtype: type[np.floating[Any]], window_dtype: type[np.floating[Any]]
) -> None:
    frequencies = [0.4, 0.3, 0.2, 0.1]
    for reference, window in (
        (prices(frequencies, reference_dtype), prices(frequencies)),
        (amounts(reference_dtype), amounts(np.float64)),
    ):
        same = checks(10, reference, window, 5000, 1000, tests, 0.05, features=10, window_dtype=window_dtype)
        assert_within_rate(*feature_alarms(same, 0.05), 0.05)
    moved = checks(
        4,
        prices(frequencies, reference_dtype),
        prices([0.2, 0.3, 0.2, 0.3]),
        5000,
        1000,
        tests,
        0.01,
        features=10,
        window_dtype=window_dtype,
    )
    assert all(feature.drifted for result in moved for feature in result.features)


def with_missing(share: float) -> Draw:
    """Normal values, each missing (NaN) with probability `share`."""

    def draw(rng: np.random.Generator, rows: int, features: int) -> Floats:
        values = rng.normal(size=(rows, features))
        values[rng.uniform(size=values.shape) < share] = np.nan
        return values

    return draw


# A small window holds an expected count of missing values below one: the chi-square approximation's
# p-values ran small there (2% missing, windows of 20 rows: 2.4% below 0.01), where Fisher's exact
# test, conservative, does not go past the threshold.
def test_missing_values_false_alarms_stay_within_the_p_value_threshold_in_small_windows() -> None:
    results = checks(120, with_missing(0.02), with_missing(0.02), 10_000, 20, KS, 0.01)
    p_values = [test.p_value for result in results for feature in result.features for test in feature.tests[1:]]
    alarms, tests = sum(p is not None and p < 0.01 for p in p_values), len(p_values)
    assert tests == 120 * FEATURES
    assert_within_rate(alarms, tests, 0.01)
    moved = checks(8, with_missing(0.02), with_missing(0.4), 10_000, 20, KS, 0.01)
    found = [feature.drifted and feature.test == "missing" for result in moved for feature in result.features]
    assert sum(found) / len(found) >= 0.9


def test_mmd_false_alarms_match_the_p_value_threshold() -> None:
    results = checks(40, normal(), normal(), 2000, 500, MMD, 0.05, features=5, mmd_rows=500, mmd_permutations=200)
    alarms = sum(result.multivariate is not None and result.multivariate.p_value < 0.05 for result in results)
    assert_calibrated(alarms, len(results), 0.05)


def test_mmd_finds_a_joint_shift_of_a_fifth_of_a_standard_deviation_in_500_rows() -> None:
    results = checks(
        20, normal(), normal(mean=0.2), 2000, 500, MMD, 0.01, features=5, mmd_rows=500, mmd_permutations=200
    )
    detected = sum(result.multivariate is not None and result.multivariate.p_value < 0.01 for result in results)
    assert detected / len(results) >= 0.9
