"""The window's verdict: a stated false-alarm rate over many features, power for one drifted feature, a score
that separates drift from noise, and the drifts of the issue (one category mix, a new category, missing values).

Calibration as in test_drift_calibration: fixed seeds, a fresh reference per trial, windows drawn
from the reference's own distribution. A window false-alarms when its verdict is drift; the count
of false alarms in T windows is at most Binomial(T, alpha) for a calibrated verdict, and each
check allows 3.5 binomial standard deviations above T alpha. The measured rates are printed
(pytest -s) so they can be quoted.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from scaleml_api.profile import MAX_SAMPLE_ROWS
from scaleml_api.v1alpha1 import driftmonitor as monitoring
from scaleml_workloads.drift.detector import DriftDetector, DriftResult
from scaleml_workloads.drift.reference import Reference
from scaleml_workloads.monitor.report import render
from tests.workloads.test_drift_calibration import mixed

pytestmark = pytest.mark.workloads

Floats = npt.NDArray[np.float64]
FEATURES = 50
CATEGORICAL = 10  # the last ten of the fifty
PLANS = [0.5, 0.3, 0.2]
NAMES = [f"x{index}" for index in range(FEATURES)]
KINDS = {name: ["a", "b", "c"] for name in NAMES[FEATURES - CATEGORICAL :]}


def table(rng: np.random.Generator, rows: int, plans: Sequence[float] = PLANS) -> Floats:
    """Forty numeric features of four shapes, then ten categorical ones (codes of three plans)."""
    values = mixed(rng, rows, FEATURES)
    values[:, FEATURES - CATEGORICAL :] = rng.choice(3, size=(rows, CATEGORICAL), p=plans)
    return values


def windows(
    trials: int,
    rows: int,
    tests: monitoring.Tests,
    alpha: float,
    change: Callable[[np.random.Generator, Floats], None] = lambda rng, window: None,
) -> list[DriftResult]:
    """One window per trial against a fresh reference of MAX_SAMPLE_ROWS rows; `change` moves the window."""
    results = []
    for trial in range(trials):
        rng = np.random.default_rng(1000 + trial)
        detector = DriftDetector(
            Reference.from_arrays(table(rng, MAX_SAMPLE_ROWS), NAMES, KINDS),
            tests,
            monitoring.Thresholds(p_value=alpha),
            seed=trial,
            mmd_rows=300,
            mmd_permutations=200,
        )
        window = table(rng, rows)
        change(rng, window)
        results.append(detector.check({"INPUT__0": window.astype(np.float32)}))
    return results


def at_most_the_level(alarms: int, trials: int, alpha: float) -> None:
    bound = trials * alpha + 3.5 * math.sqrt(trials * alpha * (1 - alpha))
    assert alarms <= bound, f"{alarms} false alarms in {trials} windows, at most {bound:.1f} for {alpha}"


DEFAULT = monitoring.Tests()  # ks, chi2 and mmd in one family


def test_windows_without_drift_false_alarm_at_most_at_the_level_with_50_features() -> None:
    alpha, trials = 0.05, 100
    results = windows(trials, 1000, DEFAULT, alpha)
    alarms = sum(result.drift_detected for result in results)
    # Uncorrected, each of 51 tests at 0.05 would flag most windows: the correction is what holds the level.
    uncorrected = sum(any(f.p_value is not None and f.p_value < alpha for f in result.features) for result in results)
    scores = [result.score for result in results]
    print(
        f"\nwindow false alarms, 50 features + mmd, 1000 rows, pValue {alpha}: {alarms}/{trials} "
        f"({alarms / trials:.3f}); uncorrected {uncorrected}/{trials}; score median {np.median(scores):.3f}, "
        f"95th percentile {np.quantile(scores, 0.95):.3f}"
    )
    at_most_the_level(alarms, trials, alpha)
    assert uncorrected > trials / 2
    # Every window that lists drifted features is a drifted window (no quorum is set).
    for result in results:
        multivariate = result.multivariate is not None and result.multivariate.drifted
        assert result.drift_detected == (bool(result.drifted_features) or multivariate)
    assert np.median(scores) < 0.1


def shift_mean(feature: int, by: float) -> Callable[[np.random.Generator, Floats], None]:
    def change(rng: np.random.Generator, window: Floats) -> None:
        window[:, feature] += by * np.std(window[:, feature])

    return change


def move_plans(feature: int, plans: Sequence[float]) -> Callable[[np.random.Generator, Floats], None]:
    def change(rng: np.random.Generator, window: Floats) -> None:
        window[:, feature] = rng.choice(3, size=len(window), p=plans)

    return change


@pytest.mark.parametrize(
    ("what", "rows", "change", "feature", "floor"),
    [
        ("mean of one normal feature moved by 0.25 sd", 1000, shift_mean(0, 0.25), "x0", 0.9),
        ("5 points of one category's share moved to another", 2000, move_plans(45, [0.45, 0.3, 0.25]), "x45", 0.6),
    ],
)
def test_one_drifted_feature_among_50_is_found(
    what: str, rows: int, change: Callable[[np.random.Generator, Floats], None], feature: str, floor: float
) -> None:
    trials, alpha = 20, 0.01
    results = windows(trials, rows, DEFAULT, alpha, change)
    found = sum(result.drift_detected and feature in result.drifted_features for result in results)
    others = sum(len([name for name in result.drifted_features if name != feature]) for result in results)
    print(f"\npower, {what}, {rows} rows, 50 features, pValue {alpha}: {found}/{trials} ({found / trials:.2f})")
    assert found / trials >= floor
    assert others <= 2  # the correction keeps the other 49 features quiet


@pytest.mark.parametrize("test", ["psi", "js"])
def test_distances_do_not_false_alarm_on_small_windows(test: str) -> None:
    """100 rows against 50 histogram bins: the distances themselves are large from noise alone."""
    alpha, trials = 0.05, 30
    tests = monitoring.Tests(numeric=test, categorical=test, multivariate="none")
    results = []
    for trial in range(trials):
        rng = np.random.default_rng(2000 + trial)
        names = NAMES[:10]
        detector = DriftDetector(
            Reference.from_arrays(mixed(rng, MAX_SAMPLE_ROWS, 10), names), tests, monitoring.Thresholds(p_value=alpha)
        )
        results.append(detector.check({"INPUT__0": mixed(rng, 100, 10).astype(np.float32)}))
    p_values = [f.tests[0].p_value for result in results for f in result.features]
    raw = sum(p is not None and p < alpha for p in p_values)
    above = sum(f.statistic is not None and f.statistic > f.threshold for result in results for f in result.features)
    alarms = sum(result.drift_detected for result in results)
    print(
        f"\n{test} at 100 rows: {above}/{len(p_values)} distances above the threshold, {raw} raw p < {alpha}, "
        f"{alarms}/{trials} windows drifted"
    )
    expected, spread = len(p_values) * alpha, 3.5 * math.sqrt(len(p_values) * alpha * (1 - alpha))
    assert abs(raw - expected) <= spread
    at_most_the_level(alarms, trials, alpha)


def seven(rng: np.random.Generator, rows: int, plans: Sequence[float] = PLANS) -> Floats:
    """Five numeric features and two categorical ones (plan, region), as in the tables of the issue."""
    numeric = mixed(rng, rows, 5)
    plan = rng.choice(3, size=rows, p=plans)
    region = rng.choice(4, size=rows, p=[0.4, 0.3, 0.2, 0.1])
    return np.column_stack([numeric, plan, region])


SEVEN = ["a", "b", "c", "d", "e", "plan", "region"]
SEVEN_KINDS = {"plan": ["basic", "max", "pro"], "region": ["north", "east", "south", "west"]}


def category_mix(rng: np.random.Generator, window: Floats) -> None:
    window[:, 5] = rng.choice(3, size=len(window), p=[0.3, 0.3, 0.4])


def new_category(rng: np.random.Generator, window: Floats) -> None:
    window[rng.random(len(window)) < 0.1, 6] = 4  # a fifth region, never seen in training


def missing_values(rng: np.random.Generator, window: Floats) -> None:
    window[rng.random(len(window)) < 0.3, 1] = np.nan


@pytest.mark.parametrize(
    ("change", "drifted", "test"),
    [(category_mix, "plan", "chi2"), (new_category, "region", "chi2"), (missing_values, "b", "missing")],
)
@pytest.mark.parametrize("quorum", [None, 0.3])
def test_the_drifts_of_the_issue_make_a_drifted_window_and_the_report_agrees(
    change: Callable[[np.random.Generator, Floats], None], drifted: str, test: str, quorum: float | None
) -> None:
    rng = np.random.default_rng(7)
    thresholds = monitoring.Thresholds(share_of_drifted_features=quorum)
    detector = DriftDetector(
        Reference.from_arrays(seven(rng, MAX_SAMPLE_ROWS), SEVEN, SEVEN_KINDS), DEFAULT, thresholds
    )
    calm = detector.check({"INPUT__0": seven(rng, 2000).astype(np.float32)})
    window = seven(rng, 2000)
    change(rng, window)
    result = detector.check({"INPUT__0": window.astype(np.float32)})
    report = render(
        result, monitor="ml/churn", checked_at=datetime(2026, 12, 1, tzinfo=UTC), reference_version=1, trend=[]
    )

    assert result.drifted_features == [drifted]
    feature = next(f for f in result.features if f.name == drifted)
    assert feature.test == test
    assert feature.q_value is not None
    assert feature.p_value is not None
    assert feature.p_value <= feature.q_value < 0.01
    assert result.score > 0.5 > 0.1 > calm.score
    assert result.top_features[0].name == drifted
    assert html_says(report, result.verdict)
    if quorum is None:
        assert result.drift_detected
        assert "drift detected" in report
        assert result.verdict.startswith(f"drift in {drifted}")
    else:
        # One of seven is below the opt-in quorum of 30%: quiet, and everything says which rule and why.
        assert not result.drift_detected
        assert result.kept_quiet_by == "shareOfDriftedFeatures"
        assert "thresholds.shareOfDriftedFeatures 30%" in result.verdict
        assert "Kept quiet by a rule" in report


def html_says(report: str, text: str) -> bool:
    return html.escape(text) in report


def test_the_score_follows_the_evidence_and_the_importance() -> None:
    rng = np.random.default_rng(8)
    reference = Reference.from_arrays(seven(rng, MAX_SAMPLE_ROWS), SEVEN, SEVEN_KINDS)

    def score(importance: dict[str, float], plans: Sequence[float]) -> float:
        features = tuple(f.model_copy(update={"importance": importance.get(f.name)}) for f in reference.features)
        weighted = Reference(reference.input, features, reference.values)
        detector = DriftDetector(weighted, DEFAULT, monitoring.Thresholds())
        window = seven(np.random.default_rng(9), 2000, plans)
        return detector.check({"INPUT__0": window.astype(np.float32)}).score

    calm, strong = PLANS, [0.2, 0.3, 0.5]
    moves = [calm, [0.48, 0.3, 0.22], [0.46, 0.3, 0.24], [0.44, 0.3, 0.26], strong]  # 0, 2, 4, 6 and 30 points
    scores = [score({}, plans) for plans in moves]
    print(f"\nscore, plan share moved by 0, 2, 4, 6, 30 points: {', '.join(f'{s:.3f}' for s in scores)}")
    assert scores == sorted(scores)  # more evidence, never a lower score
    assert scores[0] < 0.1
    assert any(0.1 < s < 0.9 for s in scores)
    assert scores[-1] > 0.9
    # The same strong shift in the most important feature, then in one the model barely uses.
    important = score({"plan": 0.2, "a": 0.1}, strong)
    ignored = score({"plan": 0.01, "a": 0.2}, strong)
    print(f"score, strong shift of plan, plan most important / plan 5% as important: {important:.3f}, {ignored:.3f}")
    assert important > 0.9
    assert ignored < 0.1
