"""Real traffic against real profiles: every kind of malformed window gives a result or a message, never an exception.

The profiles come from the builder training uses (training.profile.profile_data), in memory and
through their JSON form, as the monitor reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy.stats import chi2_contingency  # type: ignore[import-untyped]

from scaleml_api.profile import DataProfile, Histogram, TensorSpec
from scaleml_api.v1alpha1 import driftmonitor as monitoring
from scaleml_api.v1alpha1.trainingjob import DataSpec
from scaleml_workloads.drift.detector import MISSING_SHIFT, UNSEEN, DriftDetector, DriftResult, FeatureResult
from scaleml_workloads.training.data import TrainingData
from scaleml_workloads.training.profile import profile_data

Array = npt.NDArray[Any]
PLANS = ("basic", "max", "pro")


def profile_of(
    features: Array, names: Sequence[str], categories: Mapping[str, Sequence[str]] | None = None
) -> DataProfile:
    """The profile training writes for these features (float32 table, or int64 token ids, or an N-d array), via JSON."""
    rows = len(features)
    data = TrainingData(
        source=Path("train.parquet"),
        features=features,
        target=np.zeros(rows, np.float32),
        feature_names=tuple(names),
        categories={name: tuple(values) for name, values in (categories or {}).items()},
        labels=(),
        target_name="y",
    )
    spec = DataSpec(source="train.parquet", volume_claim="datasets", target="y")
    model_input = TensorSpec(
        name="INPUT__0",
        data_type="TYPE_INT64" if features.dtype == np.int64 else "TYPE_FP32",
        dims=list(features.shape[1:]),
    )
    profile = profile_data(data, spec, "regression", "0" * 64, model_input, seed=1)
    return DataProfile.model_validate_json(profile.model_dump_json())


def table(rows: int, seed: int, *, shift: float = 0.0, plans: Sequence[float] = (0.5, 0.3, 0.2)) -> Array:
    """Columns a, b (normal), c (exponential), plan (codes of PLANS)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1.0, rows)
    b = rng.normal(0.0, 2.0, rows)
    c = rng.exponential(1.0, rows)
    plan: Array = rng.choice(len(plans), size=rows, p=plans)
    columns: Array = np.stack([a, b, c, plan], axis=1)
    return columns.astype(np.float32)


@pytest.fixture(scope="module")
def churn() -> DataProfile:
    return profile_of(table(8000, seed=0), ["a", "b", "c", "plan"], {"plan": PLANS})


def detector(
    profile: DataProfile, features: Sequence[str] = (), permutations: int = 100, **tests: str
) -> DriftDetector:
    return DriftDetector.from_profile(
        profile,
        monitoring.Tests(**{"multivariate": "none", **tests}),
        monitoring.Thresholds(),
        features,
        mmd_rows=300,
        mmd_permutations=permutations,
    )


def feature(result: DriftResult, name: str) -> FeatureResult:
    return next(f for f in result.features if f.name == name)


def test_a_window_like_the_training_data_has_results_and_bins_for_every_feature(churn: DataProfile) -> None:
    result = detector(churn, multivariate="mmd").check({"INPUT__0": table(3000, seed=1)}, expected_rows=3000)
    assert result.messages == []
    assert (result.rows, result.rows_rejected) == (3000, 0)
    assert not result.drift_detected
    assert result.multivariate is not None
    assert not result.multivariate.drifted
    for f in result.features:
        assert f.statistic is not None
        assert f.message == ""
        assert len(f.bins) == len(f.reference_frequencies) == len(f.current_frequencies)
        assert sum(f.current_frequencies) == pytest.approx(1.0)
        assert sum(f.reference_frequencies) == pytest.approx(1.0)
    assert feature(result, "a").bins[0].startswith("(-inf, ")
    assert feature(result, "a").bins[-1].endswith(", inf)")
    assert feature(result, "plan").bins == ["basic", "max", "pro", UNSEEN]  # most frequent first
    assert 0.0 <= result.score < 0.5


@pytest.mark.parametrize("numeric", ["ks", "psi", "wasserstein", "js"])
@pytest.mark.parametrize("categorical", ["chi2", "psi", "js"])
def test_every_test_survives_a_window_with_everything_wrong_at_once(
    churn: DataProfile, numeric: str, categorical: str
) -> None:
    window = table(500, seed=2)
    window[:, 0] = np.nan  # a: nothing
    window[:3, 1] = [np.inf, -np.inf, np.nan]  # b: invalid and missing
    window[:, 2] = 1.5  # c: constant
    window[:4, 3] = [7, 1.5, -1, np.nan]  # plan: unseen, no code, unseen, missing
    window[10:20] = np.nan  # rows with nothing
    check = detector(churn, numeric=numeric, categorical=categorical, multivariate="mmd")
    result = check.check({"INPUT__0": window, "OUTPUT__0": np.zeros((500, 2))}, expected_rows=1000)
    assert result.rows_rejected == 10
    assert feature(result, "a").tests[0].statistic is None  # no values to test
    assert feature(result, "a").drifted  # its values went missing
    assert feature(result, "a").test == "missing"
    assert feature(result, "b").statistic is not None
    assert feature(result, "c").statistic is not None
    assert feature(result, "plan").statistic is not None
    assert any("fewer than the 1000 asked for" in message for message in result.messages)
    assert result.multivariate is not None


def test_a_jump_in_missing_values_is_drift_and_a_small_change_is_not(churn: DataProfile) -> None:
    window = table(4000, seed=3)
    window[:320, 0] = np.nan  # 8% missing, none in the reference
    window[:40, 1] = np.nan  # 1%: significant, yet under MISSING_SHIFT
    result = detector(churn).check({"INPUT__0": window})
    a, b = feature(result, "a"), feature(result, "b")
    assert a.missing_fraction == pytest.approx(0.08)
    assert a.reference_missing_fraction == 0.0
    assert a.drifted
    assert result.drift_detected
    assert "missing in 8.0% of the window, 0.0% of the reference" in a.message
    # The missing values decide, with their own test and p-value (SciPy's on the same counts).
    expected = chi2_contingency([[churn.features[0].count, 0], [3680, 320]], correction=False)
    assert (a.test, a.threshold) == ("missing", 0.01)
    assert a.statistic == pytest.approx(expected.statistic)
    assert a.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    assert a.p_value is not None
    assert 0 < a.p_value < 1e-100
    values = a.tests[0]
    assert values.test == "ks"
    assert values.p_value is not None
    assert values.p_value > 0.01  # the values present did not move
    assert not values.drifted
    assert f"the values present: ks {values.statistic:.3g}" in a.message
    assert a.rows == 3680
    assert b.missing_fraction == pytest.approx(0.01)
    assert b.missing_fraction < MISSING_SHIFT
    assert not b.drifted
    assert b.message == ""


def test_missing_values_of_the_reference_are_the_baseline() -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(6000, 2)).astype(np.float32)
    features[rng.random(6000) < 0.2, 0] = np.nan
    profile = profile_of(features, ["x", "y"])
    window = rng.normal(size=(3000, 2)).astype(np.float32)
    window[rng.random(3000) < 0.2, 0] = np.nan
    x = feature(detector(profile).check({"INPUT__0": window}), "x")
    assert x.reference_missing_fraction == pytest.approx(0.2, abs=0.02)
    assert x.missing_fraction == pytest.approx(0.2, abs=0.03)
    assert not x.drifted
    window[:, 0] = rng.normal(size=3000)  # the missing values vanished: also a change
    x = feature(detector(profile).check({"INPUT__0": window}), "x")
    assert x.drifted
    assert "missing in 0.0% of the window" in x.message


def test_infinite_values_are_invalid_and_counted_with_the_missing(churn: DataProfile) -> None:
    window = table(2000, seed=5)
    window[:5, 1] = np.inf
    window[5:8, 1] = -np.inf
    b = feature(detector(churn).check({"INPUT__0": window}), "b")
    assert b.rows == 1992
    assert b.missing_fraction == pytest.approx(8 / 2000)
    assert "8 values are ±inf (counted as missing)" in b.message
    assert b.statistic is not None


def test_constant_columns_in_the_reference_or_the_window() -> None:
    rng = np.random.default_rng(6)
    features = np.stack([np.full(3000, 2.0), rng.normal(size=3000)], axis=1).astype(np.float32)
    profile = profile_of(features, ["flat", "x"])
    for test in ("ks", "psi", "wasserstein", "js"):
        same = np.stack([np.full(1000, 2.0), np.full(1000, 0.25)], axis=1).astype(np.float32)
        result = detector(profile, numeric=test).check({"INPUT__0": same})
        flat, x = feature(result, "flat"), feature(result, "x")
        assert flat.statistic == pytest.approx(0.0, abs=1e-9), test
        assert not flat.drifted, test
        assert x.statistic is not None
        assert x.drifted, test  # a constant window of a varying feature
        moved = same.copy()
        moved[:, 0] = 3.0
        assert feature(detector(profile, numeric=test).check({"INPUT__0": moved}), "flat").drifted, test
    wasserstein = feature(detector(profile, numeric="wasserstein").check({"INPUT__0": moved}), "flat")
    assert wasserstein.statistic == pytest.approx(1.0)
    assert "the reference is constant" in wasserstein.message


def test_ks_tests_a_feature_with_few_distinct_values_on_its_counts_as_chi2() -> None:
    rng = np.random.default_rng(11)
    flag, rating = (rng.uniform(size=3000) < 0.1).astype(np.float64), rng.integers(1, 6, size=3000).astype(np.float64)
    profile = profile_of(np.stack([flag, rating, rng.normal(size=3000)], axis=1).astype(np.float32), ["f", "r", "x"])
    # Ratings of 6, which the reference never had, are a bucket of their own.
    window_flag, window_rating = (rng.uniform(size=1000) < 0.1).astype(np.float64), rng.integers(1, 7, size=1000)
    window = np.stack([window_flag, window_rating, rng.normal(size=1000)], axis=1).astype(np.float32)
    result = detector(profile, numeric="ks").check({"INPUT__0": window})
    for name, reference, current, values in [
        ("f", flag, window_flag, [0, 1]),
        ("r", rating, window_rating, range(1, 7)),
    ]:
        tested = feature(result, name)
        assert (tested.test, tested.tests[0].test) == ("chi2", "chi2")
        assert "few distinct values: tested as counts" in tested.message
        table = [[int(np.sum(sample == value)) for value in values] for sample in (reference, current)]
        expected = chi2_contingency(table, correction=False)
        assert tested.statistic == pytest.approx(expected[0], rel=1e-9)
        assert tested.p_value == pytest.approx(expected[1], rel=1e-6)
    assert feature(result, "r").drifted
    x = feature(result, "x")
    assert (x.test, x.message) == ("ks", "")


def test_heavy_tailed_values_tripled_drift_on_bins_of_equal_shares_and_older_profiles_still_load() -> None:
    rng = np.random.default_rng(8)
    amounts = rng.lognormal(0.0, 2.5, size=(20_000, 1)).astype(np.float32)
    profile = profile_of(amounts, ["amount"])
    tripled = (3 * rng.lognormal(0.0, 2.5, size=(2000, 1))).astype(np.float32)
    amount = feature(detector(profile, numeric="js").check({"INPUT__0": tripled}), "amount")
    assert amount.drifted
    # The report plots these bins: none holds most of the values (equal widths put 98% in one).
    assert max(amount.reference_frequencies) < 0.05
    # A profile written with equal-width bins, as before, is read and tested on its own bins.
    counts, edges = np.histogram(amounts, bins=50)
    summary = profile.features[0].numeric
    assert summary is not None
    histogram = Histogram(edges=edges.tolist(), counts=counts.tolist())
    older = profile.model_copy(
        update={
            "features": [
                profile.features[0].model_copy(update={"numeric": summary.model_copy(update={"histogram": histogram})})
            ]
        }
    )
    read = DataProfile.model_validate_json(older.model_dump_json())
    calm = rng.lognormal(0.0, 2.5, size=(2000, 1)).astype(np.float32)
    amount = feature(detector(read, numeric="js").check({"INPUT__0": calm}), "amount")
    assert amount.statistic is not None
    assert not amount.drifted
    assert amount.reference_frequencies[1:-1] == pytest.approx(counts / counts.sum())


def test_new_categories_go_to_the_unseen_bin_and_drift(churn: DataProfile) -> None:
    window = table(3000, seed=7)
    window[:300, 3] = 3  # a fourth plan, never seen in training
    window[300:303, 3] = -1  # a negative code names no category either
    plan = feature(detector(churn).check({"INPUT__0": window}), "plan")
    assert plan.bins[-1] == UNSEEN
    assert plan.current_frequencies[-1] == pytest.approx(303 / 3000)
    assert plan.reference_frequencies[-1] == 0.0
    assert "303 values (10.1%) are not among the categories the reference lists" in plan.message
    assert plan.drifted
    assert plan.p_value is not None
    assert plan.p_value < 1e-10


def test_values_that_are_no_category_code_are_invalid(churn: DataProfile) -> None:
    window = table(3000, seed=8)
    window[:6, 3] = [0.5, 2.25, np.inf, -np.inf, np.nan, np.nan]
    plan = feature(detector(churn).check({"INPUT__0": window}), "plan")
    assert plan.rows == 2994
    assert plan.missing_fraction == pytest.approx(6 / 3000)
    assert "4 values are no category code (counted as missing)" in plan.message
    assert not plan.drifted


def test_a_window_smaller_than_asked_is_tested_and_said(churn: DataProfile) -> None:
    result = detector(churn).check({"INPUT__0": table(40, seed=9)}, expected_rows=5000)
    assert result.messages == ["the window has 40 rows, fewer than the 5000 asked for"]
    assert all(f.statistic is not None for f in result.features)


def test_an_empty_window(churn: DataProfile) -> None:
    result = detector(churn).check({"INPUT__0": np.empty((0, 4), np.float32)}, expected_rows=10)
    assert result.rows == 0
    assert all(f.statistic is None and f.message == "the window has no rows" for f in result.features)
    assert "no feature could be tested" in result.messages
    assert not result.drift_detected
    assert result.score == 0.0


def test_a_window_without_the_input_tensor(churn: DataProfile) -> None:
    result = detector(churn).check({"OUTPUT__0": np.zeros((70, 2)), "timestamp": np.zeros(70)})
    assert result.messages[0] == "the window has no INPUT__0 (it has OUTPUT__0, timestamp)"
    assert (result.rows, result.rows_rejected) == (70, 70)
    assert [f.statistic for f in result.features] == [None] * 4
    assert not result.drift_detected


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((50, 3), "INPUT__0 has 3 columns, the reference's input has 4 (1 missing): no feature is tested"),
        ((50, 6), "INPUT__0 has 6 columns, the reference's input has 4 (2 added): no feature is tested"),
        ((50,), "INPUT__0 has rows of shape [], the reference's input has rows of shape [4]: no feature is tested"),
        ((50, 2, 2), "INPUT__0 has rows of shape [2, 2], the reference's input has rows of shape [4]"),
    ],
)
def test_an_input_of_the_wrong_shape(churn: DataProfile, shape: tuple[int, ...], message: str) -> None:
    result = detector(churn).check({"INPUT__0": np.zeros(shape, np.float32)})
    assert result.messages[0].startswith(message)
    assert (result.rows, result.rows_rejected) == (50, 50)
    assert all(f.statistic is None for f in result.features)


def test_an_input_that_is_not_numbers(churn: DataProfile) -> None:
    result = detector(churn).check({"INPUT__0": np.array([["a", "b", "c", "d"]] * 5)})
    assert result.messages[0].startswith("INPUT__0 holds <U1 values, not numbers")
    assert result.rows_rejected == 5


def test_features_the_profile_lacks_are_named(churn: DataProfile) -> None:
    result = detector(churn, features=["a", "tenure", "plan", "a"]).check({"INPUT__0": table(500, seed=10)})
    assert [f.name for f in result.features] == ["a", "plan"]
    assert result.messages == ["feature 'tenure' is not in the reference profile; it is not tested"]


def test_integer_and_float64_inputs_are_read_as_numbers(churn: DataProfile) -> None:
    window = table(1000, seed=11)
    as_float32 = detector(churn).check({"INPUT__0": window})
    as_float64 = detector(churn).check({"INPUT__0": window.astype(np.float64)})
    assert [f.statistic for f in as_float64.features] == pytest.approx([f.statistic for f in as_float32.features])
    codes_only = detector(churn, features=["plan"]).check({"INPUT__0": np.round(window).astype(np.int32)})
    assert feature(codes_only, "plan").statistic is not None


def test_a_feature_without_values_in_the_reference() -> None:
    rng = np.random.default_rng(12)
    features = np.stack([np.full(2000, np.nan), rng.normal(size=2000)], axis=1).astype(np.float32)
    profile = profile_of(features, ["empty", "x"])
    for test in ("ks", "psi", "wasserstein", "js"):
        result = detector(profile, numeric=test).check({"INPUT__0": rng.normal(size=(500, 2)).astype(np.float32)})
        empty = feature(result, "empty")
        assert empty.tests[0].statistic is None
        assert empty.test == "missing"
        assert empty.message.startswith("the reference has no values of this feature")
        assert empty.drifted  # it has values now
        assert empty.bins == []


def test_the_multivariate_test_leaves_out_features_without_values(churn: DataProfile) -> None:
    window = table(1000, seed=13, shift=1.0)
    window[:, 1] = np.nan
    result = detector(churn, multivariate="mmd").check({"INPUT__0": window})
    assert "the multivariate test leaves out features without values: b" in result.messages
    assert result.multivariate is not None
    # a moved by one standard deviation: no permutation of 100 reaches the statistic, so the p-value
    # is only known to be at most 1/101, and said so.
    assert result.multivariate.p_value_is_bound
    assert result.multivariate.p_value == pytest.approx(1 / 101)
    assert result.drift_detected


def test_share_of_drifted_features_is_an_opt_in_quorum(churn: DataProfile) -> None:
    window = table(3000, seed=14, shift=0.5)  # a moves, b, c and plan do not
    for share, detected in ((None, True), (0.25, True), (0.3, False)):
        result = DriftDetector.from_profile(
            churn,
            monitoring.Tests(multivariate="none"),
            monitoring.Thresholds(share_of_drifted_features=share),
        ).check({"INPUT__0": window})
        assert result.drifted_features == ["a"]
        assert result.share_drifted == 0.25
        assert result.drift_detected is detected
        assert result.kept_quiet_by == ("" if detected else "shareOfDriftedFeatures")
        assert ("below thresholds.shareOfDriftedFeatures 30%" in result.verdict) is not detected


def test_pooled_tokens_from_a_real_profile() -> None:
    rng = np.random.default_rng(15)
    tokens = rng.integers(0, 50, size=(3000, 12))
    profile = profile_of(tokens, ["text"])
    assert profile.features[0].reduction == "pool"
    same = detector(profile).check({"INPUT__0": rng.integers(0, 50, size=(400, 12))})
    text = feature(same, "text")
    assert text.rows == 4800
    assert not text.drifted
    shifted = rng.integers(0, 60, size=(400, 12))  # ids 50..59 are new
    text = feature(detector(profile).check({"INPUT__0": shifted}), "text")
    assert text.drifted
    assert text.current_frequencies[-1] == pytest.approx(np.mean(shifted >= 50))


def topical_text(rows: int, topics: Array, rng: np.random.Generator) -> Array:
    """Rows of 32 token ids, each row drawn from the token distribution of one topic (of `topics`, chosen at random)."""
    chosen = rng.integers(0, len(topics), rows)
    return np.stack([rng.choice(topics.shape[1], 32, p=topics[topic]) for topic in chosen])


def test_pooled_tokens_are_tested_at_the_number_of_rows() -> None:
    rng = np.random.default_rng(17)
    topics = rng.dirichlet(np.full(200, 0.05), size=20)
    text_detector = detector(profile_of(topical_text(3000, topics, rng), ["text"]))
    # Windows of the same text: a row's 32 tokens share its topic, far from 32 independent draws.
    calm = [feature(text_detector.check({"INPUT__0": topical_text(500, topics, rng)}), "text") for _ in range(10)]
    assert [text.drifted for text in calm] == [False] * 10
    assert all(text.rows == 500 * 32 for text in calm)
    # Rows that keep to half the topics: the token frequencies did move.
    moved = feature(text_detector.check({"INPUT__0": topical_text(500, topics[:10], rng)}), "text")
    assert moved.drifted
    assert moved.p_value is not None
    assert moved.p_value < 1e-6


def test_channel_means_from_a_real_profile() -> None:
    rng = np.random.default_rng(16)
    images = rng.normal(size=(2000, 3, 4, 4)).astype(np.float32) + np.array([0.0, 1.0, 2.0], np.float32)[:, None, None]
    profile = profile_of(images, ["image"])
    assert [(f.name, f.reduction, f.axis, f.index) for f in profile.features] == [
        ("image[0]", "mean", 1, 0),
        ("image[1]", "mean", 1, 1),
        ("image[2]", "mean", 1, 2),
    ]
    window = rng.normal(size=(600, 3, 4, 4)).astype(np.float32) + np.array([0.0, 1.0, 2.5], np.float32)[:, None, None]
    window[:5, 0] = np.nan  # whole channel missing in five rows: those means are missing
    # Five tests (three channels, the missing values of one, the multivariate): enough permutations
    # for a p-value that can stand below 2 x 0.01 / 5 at the multivariate test's rank.
    result = detector(profile, permutations=1000, multivariate="mmd").check({"INPUT__0": window})
    assert [f.drifted for f in result.features] == [False, False, True]
    assert feature(result, "image[0]").rows == 595
    assert result.multivariate is not None
    assert result.multivariate.drifted
