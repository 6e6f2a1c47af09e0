"""Tables of named columns into the drift detector (`compare`, `DriftDetector.check_table`): by name, never by position.

DataFrames, pyarrow Tables and dicts of columns, in any order, with extra, missing or mistyped
columns: each gives the result of the same data in order, or a message, never an exception and
never a silent verdict. The statistics are checked against SciPy's on the same columns.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pytest
from scipy.stats import chi2_contingency, ks_2samp  # type: ignore[import-untyped]

from scaleml_api.profile import DataProfile, TensorSpec
from scaleml_api.v1alpha1 import driftmonitor as monitoring
from scaleml_api.v1alpha1.trainingjob import DataSpec
from scaleml_workloads.drift.comparison import compare
from scaleml_workloads.drift.detector import UNSEEN, DriftResult, FeatureResult
from scaleml_workloads.drift.tables import read_columns, reference_values
from scaleml_workloads.training.data import TrainingData
from scaleml_workloads.training.profile import profile_data, profile_table

PLANS = ("basic", "max", "pro")
# The multivariate test draws rows at random: the per-feature tests alone, where results are compared exactly.
PER_FEATURE = monitoring.Tests(multivariate="none")


def churn(rows: int, seed: int, *, shift: float = 0.0, plans: tuple[float, ...] = (0.5, 0.3, 0.2)) -> dict[str, Any]:
    """Columns as a user has them: numbers, a string category, an integer."""
    rng = np.random.default_rng(seed)
    return {
        "age": rng.normal(40.0 + shift, 10.0, rows),
        "income": rng.lognormal(10.0, 0.5, rows),
        "plan": rng.choice(PLANS, size=rows, p=plans).tolist(),
        "tenure": rng.integers(0, 60, rows),
    }


def feature(result: DriftResult, name: str) -> FeatureResult:
    return next(f for f in result.features if f.name == name)


def statistics(result: DriftResult) -> dict[str, tuple[float | None, float | None, bool]]:
    return {f.name: (f.statistic, f.p_value, f.drifted) for f in result.features}


def test_the_statistics_are_scipys_on_the_same_columns() -> None:
    reference, current = churn(4000, seed=0), churn(1500, seed=1, shift=3.0, plans=(0.3, 0.3, 0.4))
    result = compare(reference, current, tests=PER_FEATURE)
    for name in ("age", "income", "tenure"):
        expected = ks_2samp(reference[name], current[name])
        assert feature(result, name).statistic == pytest.approx(expected.statistic, abs=1e-12), name
        assert feature(result, name).p_value == pytest.approx(expected.pvalue, rel=1e-6), name
    counts = [[reference["plan"].count(plan) for plan in PLANS], [current["plan"].count(plan) for plan in PLANS]]
    expected_chi2 = chi2_contingency(counts, correction=False)
    plan = feature(result, "plan")
    assert plan.statistic == pytest.approx(expected_chi2.statistic)
    assert plan.p_value == pytest.approx(expected_chi2.pvalue, rel=1e-6)
    assert set(result.drifted_features) == {"age", "plan"}
    assert result.drift_detected


def test_columns_in_another_order_give_the_same_result() -> None:
    reference, current = churn(4000, seed=0), churn(1500, seed=2, shift=2.0)
    in_order = compare(reference, current, tests=PER_FEATURE)
    reordered = compare(reference, dict(reversed(current.items())), tests=PER_FEATURE)
    assert statistics(reordered) == statistics(in_order)
    assert reordered.drift_detected == in_order.drift_detected
    assert reordered.drifted_features == in_order.drifted_features == ["age"]
    assert reordered.messages == []


def test_a_pandas_dataframe_and_a_pyarrow_table_are_read_as_the_dict() -> None:
    reference, current = churn(3000, seed=0), churn(1000, seed=3)
    expected = statistics(compare(reference, current, tests=PER_FEATURE))
    frames = compare(pd.DataFrame(reference), pd.DataFrame(current)[["tenure", "plan", "income", "age"]])
    assert statistics(compare(pd.DataFrame(reference), pd.DataFrame(current), tests=PER_FEATURE)) == expected
    assert statistics(compare(pa.table(reference), pa.table(current), tests=PER_FEATURE)) == expected
    assert not frames.drift_detected
    assert frames.multivariate is not None  # the DriftMonitor's default tests, multivariate included


def test_an_extra_column_is_ignored_with_a_message() -> None:
    reference, current = churn(3000, seed=0), churn(1000, seed=4)
    result = compare(reference, {**current, "churned": ["yes"] * 1000}, tests=PER_FEATURE)
    assert statistics(result) == statistics(compare(reference, current, tests=PER_FEATURE))
    assert result.messages == ["columns the reference has no feature for are ignored: churned"]


def test_a_missing_or_mistyped_column_has_no_statistic_and_does_not_drift() -> None:
    reference, current = churn(3000, seed=0), churn(1000, seed=5)
    without_income = {name: values for name, values in current.items() if name != "income"}
    mistyped = {**without_income, "income": [f"{value:.2f}" for value in current["income"]]}
    expected = compare(reference, without_income, features=["age", "plan", "tenure"], tests=PER_FEATURE)
    for table, why in (
        (without_income, "there is no column 'income'"),
        (mistyped, "column 'income' holds strings, but the reference's 'income' is numeric"),
    ):
        result = compare(reference, table, tests=PER_FEATURE)
        income = feature(result, "income")
        assert (income.statistic, income.p_value, income.drifted) == (None, None, False)
        assert income.message == why
        assert "income" not in result.drifted_features
        # The others as if only they had been asked for: none is a missing column in disguise.
        assert {n: s for n, s in statistics(result).items() if n != "income"} == statistics(expected)
        assert not result.drift_detected


def test_new_categories_are_unseen_and_missing_values_are_missing() -> None:
    reference = churn(4000, seed=0)
    current = churn(1000, seed=6)
    current["plan"][:150] = ["enterprise"] * 150
    current["plan"][150:160] = [None] * 10
    current["age"] = current["age"].copy()
    current["age"][:20] = np.nan
    result = compare(reference, current, tests=PER_FEATURE)
    plan = feature(result, "plan")
    assert plan.bins[-1] == UNSEEN
    assert plan.current_frequencies[-1] == pytest.approx(150 / 990)
    assert plan.missing_fraction == pytest.approx(10 / 1000)
    assert plan.drifted
    assert "150 values (15.2%) are not among the categories the reference lists" in plan.message
    assert feature(result, "age").missing_fraction == pytest.approx(20 / 1000)
    assert feature(result, "age").rows == 980


def test_a_feature_of_categories_each_too_rare_to_list_says_so() -> None:
    rng = np.random.default_rng(8)
    ids = [f"user{index}" for index in range(5000)]
    # 2,000 rows of 5,000 ids: none seen often enough to be listed, every one among the others.
    result = compare({"user": rng.choice(ids, 2000).tolist()}, {"user": rng.choice(ids, 500).tolist()})
    user = feature(result, "user")
    assert user.statistic is None
    assert "the reference lists none of this feature's categories: each is too rare in it" in user.message


def test_numbers_for_a_categorical_feature_are_the_categories_of_their_values() -> None:
    rng = np.random.default_rng(7)
    # Read as strings in the reference, as integers in the window: the same categories by value.
    levels = {"level": [str(value) for value in rng.choice([0, 1, 2, 10], size=3000)]}
    as_numbers = {"level": rng.choice([0, 1, 2, 10], size=1000)}
    as_strings = {"level": [str(value) for value in as_numbers["level"]]}
    by_value = compare(levels, as_numbers, tests=PER_FEATURE)
    assert statistics(by_value) == statistics(compare(levels, as_strings, tests=PER_FEATURE))
    assert by_value.messages == []
    # -0.0 is the category "0", as its text is.
    negative_zero = {"level": np.where(as_numbers["level"] == 0, -0.0, as_numbers["level"].astype(float))}
    assert statistics(compare(levels, negative_zero, tests=PER_FEATURE)) == statistics(by_value)
    # Grades 1-5 and a rare "U": a CSV window without a "U" is read as integers. Each is still its grade,
    # not the model's code of a category (1 was "2", 5 "U": every window drifted).
    grades = [*"12345", "U"]
    shares = (0.2, 0.2, 0.2, 0.2, 0.195, 0.005)
    reference = {"grade": rng.choice(grades, size=20_000, p=shares).tolist()}
    window = rng.choice(grades[:5], size=2000, p=np.array(shares[:5]) / sum(shares[:5]))
    as_integers = compare(reference, {"grade": window.astype(int)}, tests=PER_FEATURE)
    assert statistics(as_integers) == statistics(compare(reference, {"grade": window.tolist()}, tests=PER_FEATURE))
    assert not as_integers.drift_detected
    assert as_integers.messages == [
        "column 'grade' holds numbers for a categorical feature: each is read as the category of its value"
    ]


def test_decimals_are_the_numbers_their_text_says() -> None:
    """Arrow's decimal cast makes 0.35 0.35000000000000003: the same prices as text would drift."""
    prices = [Decimal(f"{cents / 100:.2f}") for cents in np.random.default_rng(3).integers(1, 2000, 3000)]
    as_decimals = pa.table({"price": pa.array(prices, pa.decimal128(10, 2))})
    as_floats = {"price": [float(str(price)) for price in prices]}
    result = compare(as_floats, as_decimals, tests=PER_FEATURE)
    assert feature(result, "price").statistic == 0
    wider = pa.table({"price": pa.array(prices, pa.decimal128(18, 4))})
    assert feature(compare(as_decimals, wider, tests=PER_FEATURE), "price").statistic == 0


def test_columns_of_the_reference_left_out_of_the_test_are_ignored_silently() -> None:
    reference, current = churn(3000, seed=0), churn(1000, seed=9)
    result = compare(reference, {**current, "churned": ["no"] * 1000}, features=["age"], tests=PER_FEATURE)
    assert [f.name for f in result.features] == ["age"]
    assert result.messages == ["columns the reference has no feature for are ignored: churned"]


def test_a_training_profile_is_a_reference_too() -> None:
    reference, current = churn(4000, seed=0), churn(1000, seed=8, shift=4.0)
    table, categories, left_out = reference_values(read_columns(reference), list(reference))
    assert left_out == {}
    profile = profile_table(
        table, list(reference), categories, source="train.csv", format="csv", sha256="0" * 64, seed=1
    )
    written = DataProfile.model_validate_json(profile.model_dump_json())
    assert written.target is None
    assert [f.name for f in written.features] == list(reference)
    assert written.sample.rows == 4000
    result = compare(written, dict(reversed(current.items())), tests=PER_FEATURE)
    assert result.drifted_features == ["age"]
    assert statistics(result) == statistics(compare(reference, current, tests=PER_FEATURE))
    # Columns of features left untested are the reference's all the same: nothing to say of them.
    only_age = compare(written, current, features=["age"], tests=PER_FEATURE)
    assert [f.name for f in only_age.features] == ["age"]
    assert only_age.messages == []


@pytest.mark.parametrize(
    ("current", "message"),
    [
        (np.zeros((10, 4)), "a table has named columns"),
        (
            {"age": [40.0] * 3, "plan": ["basic"] * 2, "tenure": [3, 4]},
            "column 'age' has 3 rows, the table's other columns 2",
        ),
        ({"age": ["a", 1]}, "column 'age' cannot be read as one column of values"),
        ({"age": np.zeros((5, 2))}, "column 'age' cannot be read as one column of values"),
        ({"age": pa.array([1, 2], pa.timestamp("s"))}, "column 'age' has type timestamp[s]"),
        (pa.table([[1.0], [2.0]], names=["age", "age"]), "2 columns are named 'age'"),
        ({}, "there is no column 'age'"),
    ],
)
def test_a_table_that_cannot_be_read_is_a_message_never_an_exception(current: Any, message: str) -> None:
    result = compare(churn(500, seed=0), current)
    said = [*result.messages, *(f.message for f in result.features)]
    assert any(message in text for text in said), said
    assert not result.drift_detected
    assert "age" not in result.drifted_features


def test_pandas_categorical_and_nullable_columns_are_read_as_their_values() -> None:
    reference, current = churn(3000, seed=0), churn(1000, seed=10)
    expected = statistics(compare(reference, current, tests=PER_FEATURE))
    frame = pd.DataFrame(current)
    frame["plan"] = frame["plan"].astype("category")
    frame["tenure"] = frame["tenure"].astype("Int64")
    assert statistics(compare(reference, frame, tests=PER_FEATURE)) == expected


def test_a_reference_read_from_an_array_input_says_a_table_cannot_give_it() -> None:
    images = np.random.default_rng(11).normal(size=(400, 3, 4, 4)).astype(np.float32)
    data = TrainingData(Path("images.npz"), images, np.zeros(400, np.float32), ("pixels",), {}, (), "y")
    spec = DataSpec(source="images.npz", volume_claim="datasets", target="y", format="npz")
    model_input = TensorSpec(name="INPUT__0", data_type="TYPE_FP32", dims=[3, 4, 4])
    profile = profile_data(data, spec, "regression", "0" * 64, model_input, seed=1)
    result = compare(profile, {"pixels[0]": [0.0] * 10})
    assert [f.statistic for f in result.features] == [None, None, None]
    assert not result.drift_detected
    assert all("reads it from an array input (reduction mean)" in f.message for f in result.features)


def test_an_empty_reference_is_a_message_never_an_exception() -> None:
    result = compare({"age": [], "plan": []}, churn(100, seed=12))
    assert result.features == []
    assert not result.drift_detected
    assert "reference: the table has no rows; nothing is tested" in result.messages


def test_infinite_reference_values_are_invalid_counted_as_missing_and_said() -> None:
    reference, current = churn(1000, seed=13), churn(800, seed=14)
    ages = np.array(reference["age"])
    ages[:8], ages[8:10] = np.inf, -np.inf
    result = compare({**reference, "age": ages}, current, tests=PER_FEATURE)
    assert "reference: 10 values of 'age' are ±inf (counted as missing)" in result.messages
    age = feature(result, "age")
    assert age.reference_missing_fraction == pytest.approx(0.01)
    # The finite values are compared as ever.
    expected = ks_2samp(ages[10:], current["age"])
    assert age.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert age.p_value == pytest.approx(expected.pvalue, rel=1e-6)


@pytest.mark.parametrize(
    "values",
    [[1.7e308, -1.7e308, 0.0, 1.0], [-np.finfo(np.float64).max], [1e17], [1e20], [5e-324, 1e-323]],
    ids=["near-the-largest-float", "the-largest-float", "constant-1e17", "constant-1e20", "subnormal"],
)
def test_extreme_reference_values_are_profiled_and_a_table_does_not_drift_from_itself(values: list[float]) -> None:
    column = np.resize(np.array(values), 400)
    table, categories, _ = reference_values(read_columns({"x": column}), ["x"])
    profile = profile_table(table, ["x"], categories, source="x.csv", format="csv", sha256="0" * 64, seed=1)
    written = DataProfile.model_validate_json(profile.model_dump_json())
    summary = written.features[0].numeric
    assert summary is not None
    edges = np.array(summary.histogram.edges)
    assert np.isfinite(edges).all()
    assert (np.diff(edges) > 0).all()
    assert edges[0] <= min(values)
    assert max(values) <= edges[-1]
    assert sum(summary.histogram.counts) == 400
    assert (summary.quantiles[0], summary.quantiles[-1]) == (min(values), max(values))
    assert min(values) <= summary.mean <= max(values)
    same = {"x": column, "y": np.arange(400.0)}
    result = compare(same, same)
    assert [f.statistic for f in result.features] == [0.0, 0.0]
    assert not result.drift_detected


def test_a_training_column_constant_beyond_2_to_the_53_is_profiled() -> None:
    features = np.stack([np.full(300, 1e17), np.random.default_rng(15).normal(size=300)], axis=1).astype(np.float32)
    data = TrainingData(Path("train.csv"), features, np.full(300, 2.0**60, np.float32), ("id", "x"), {}, (), "y")
    spec = DataSpec(source="train.csv", volume_claim="datasets", target="y", format="csv")
    model_input = TensorSpec(name="INPUT__0", data_type="TYPE_FP32", dims=[2])
    profile = profile_data(data, spec, "regression", "0" * 64, model_input, seed=1)
    constant = profile.features[0].numeric
    assert constant is not None
    assert constant.min == constant.max == float(np.float32(1e17))
    assert sum(constant.histogram.counts) == 300
    assert profile.target is not None
    assert profile.target.numeric is not None
    assert sum(profile.target.numeric.histogram.counts) == 300
