"""The per-group evaluation against Fairlearn's MetricFrame and difference functions, on the same predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
)
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, roc_auc_score, root_mean_squared_error

from scaleml_api.v1alpha1.trainingjob import EvaluationSpec
from scaleml_workloads.training.data import MISSING_GROUP, group_labels
from scaleml_workloads.training.errors import InvalidInputError
from scaleml_workloads.training.evaluation import evaluate, positive_index

TOLERANCE = 1e-9


def _classifier(rows: int, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.str_]]:
    """Targets, logits that are right about 70% of the time (less for group c) and a three-group feature."""
    generator = np.random.default_rng(seed)
    groups = generator.choice(np.array(["a", "b", "c"]), size=rows, p=[0.5, 0.35, 0.15])
    target = generator.integers(0, 2, size=rows)
    noise = np.where(groups == "c", 1.6, 0.9)
    margin = np.where(target == 1, 1.0, -1.0) + generator.normal(0, noise)
    logits = np.stack([np.zeros(rows), margin], axis=1)
    return target, logits, groups


@pytest.mark.parametrize("positive_label", ["", "0"])
def test_classification_equals_fairlearn(positive_label: str) -> None:
    target, logits, groups = _classifier(3000, seed=1)
    spec = EvaluationSpec(positive_label=positive_label, min_group_size=1, bootstrap_samples=0)
    result = evaluate("classification", target, logits, (0, 1), {"region": groups}, spec, seed=0)
    positive = int(positive_label or 1)
    predicted = logits.argmax(axis=1)
    # Fairlearn's rates count label 1 as the favourable one: recode so that `positive` is 1.
    y_true, y_pred = (target == positive).astype(int), (predicted == positive).astype(int)
    frame = MetricFrame(
        metrics={"accuracy": accuracy_score, "f1": lambda t, p: f1_score(t, p, pos_label=1)},
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=groups,
    )
    (audit,) = result.fairness
    by_group = {group.group: group for group in audit.groups}
    for name, expected in frame.by_group["accuracy"].items():
        assert by_group[str(name)].metrics["accuracy"] == pytest.approx(expected, abs=TOLERANCE)
        assert by_group[str(name)].metrics["f1"] == pytest.approx(frame.by_group["f1"][name], abs=TOLERANCE)
        assert by_group[str(name)].rows == int(np.count_nonzero(groups == name))
    assert audit.metric_gap == pytest.approx(frame.difference()["accuracy"], abs=TOLERANCE)
    assert audit.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=groups), abs=TOLERANCE
    )
    assert audit.equal_opportunity_difference == pytest.approx(
        equal_opportunity_difference(y_true, y_pred, sensitive_features=groups), abs=TOLERANCE
    )
    assert audit.disparate_impact_ratio == pytest.approx(
        demographic_parity_ratio(y_true, y_pred, sensitive_features=groups), abs=TOLERANCE
    )
    assert audit.worst_group == "c"
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert result.metrics["auc"] == pytest.approx(roc_auc_score(y_true, probabilities[:, positive]), abs=TOLERANCE)
    assert result.metrics["accuracy"] == pytest.approx(accuracy_score(target, predicted), abs=TOLERANCE)


def test_small_groups_are_reported_and_left_out_of_the_gaps() -> None:
    target, logits, groups = _classifier(2000, seed=2)
    groups = groups.astype("<U8")
    groups[:12] = "tiny"
    spec = EvaluationSpec(min_group_size=30, bootstrap_samples=0)
    (audit,) = evaluate("classification", target, logits, (0, 1), {"region": groups}, spec, seed=0).fairness
    assert audit.small_groups == ["tiny"]
    tiny = next(group for group in audit.groups if group.group == "tiny")
    assert tiny.rows == 12
    assert not tiny.judged
    assert tiny.metrics["accuracy"] is not None
    judged = groups != "tiny"
    y_true, y_pred = target[judged], logits[judged].argmax(axis=1)
    assert audit.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=groups[judged]), abs=TOLERANCE
    )


def test_regression_equals_fairlearn() -> None:
    generator = np.random.default_rng(3)
    groups = generator.choice(np.array(["north", "south"]), size=1500)
    target = generator.normal(10, 3, size=1500).astype(np.float32)
    predicted = target + generator.normal(0, np.where(groups == "south", 2.0, 0.5))
    spec = EvaluationSpec(min_group_size=1, bootstrap_samples=0)
    result = evaluate("regression", target, predicted[:, None], (), {"zone": groups}, spec, seed=0)
    frame = MetricFrame(
        metrics={"mae": mean_absolute_error, "rmse": root_mean_squared_error},
        y_true=target,
        y_pred=predicted,
        sensitive_features=groups,
    )
    (audit,) = result.fairness
    for group in audit.groups:
        assert group.metrics["mae"] == pytest.approx(frame.by_group["mae"][group.group], abs=TOLERANCE)
        assert group.metrics["rmse"] == pytest.approx(frame.by_group["rmse"][group.group], abs=TOLERANCE)
    assert audit.metric_gap == pytest.approx(frame.difference()["rmse"], abs=TOLERANCE)
    assert audit.worst_group == "south"
    assert audit.demographic_parity_difference is None
    assert result.metric == "rmse"


def test_bootstrap_intervals_cover_the_group_metric_and_narrow_with_rows() -> None:
    target, logits, groups = _classifier(6000, seed=4)
    spec = EvaluationSpec(min_group_size=1, bootstrap_samples=200)
    (audit,) = evaluate("classification", target, logits, (0, 1), {"region": groups}, spec, seed=0).fairness
    widths = {}
    for group in audit.groups:
        interval = group.intervals["accuracy"]
        assert interval.low <= (group.metrics["accuracy"] or 0) <= interval.high
        widths[group.group] = interval.high - interval.low
    # Group a has about three times the rows of group c: its interval is narrower.
    assert 0 < widths["a"] < widths["c"]


def test_multiclass_without_a_positive_label_has_metrics_but_no_fairness_measures() -> None:
    generator = np.random.default_rng(5)
    target = generator.integers(0, 3, size=900)
    logits = generator.normal(size=(900, 3)) + np.eye(3)[target] * 1.5
    groups = generator.choice(np.array(["x", "y"]), size=900)
    spec = EvaluationSpec(min_group_size=1, bootstrap_samples=0)
    result = evaluate("classification", target, logits, (0, 1, 2), {"g": groups}, spec, seed=0)
    (audit,) = result.fairness
    assert result.metrics["f1"] == pytest.approx(f1_score(target, logits.argmax(axis=1), average="macro"), abs=1e-12)
    assert result.metrics["auc"] is None
    assert audit.demographic_parity_difference is None
    assert "positiveLabel" in audit.note


def test_positive_label_is_matched_as_written_and_refused_when_unknown() -> None:
    assert positive_index((False, True), "true") == 1
    assert positive_index(("approved", "denied"), "approved") == 0
    assert positive_index((0, 1, 2), "") is None
    with pytest.raises(ValueError, match=r"evaluation\.positiveLabel 'yes' is not a label"):
        positive_index((0, 1), "yes")


def test_group_labels_of_numbers_strings_and_missing_values() -> None:
    assert list(group_labels(Path("d.parquet"), "g", np.array([1.0, np.nan, 2.0]))) == ["1", MISSING_GROUP, "2"]
    assert list(group_labels(Path("d.parquet"), "g", np.array(["f", None, "m"], dtype=object))) == [
        "f",
        MISSING_GROUP,
        "m",
    ]
    with pytest.raises(InvalidInputError, match=r"'age' in d\.parquet has 500 distinct values"):
        group_labels(Path("d.parquet"), "age", np.arange(500, dtype=np.float64))


def test_a_large_group_s_interval_keeps_the_width_its_rows_give() -> None:
    # 60,000 rows, more than one resample takes: the interval of the accuracy still matches the normal
    # approximation of a proportion over all of them.
    target, logits, _ = _classifier(60_000, seed=6)
    groups = np.full(60_000, "all")
    spec = EvaluationSpec(min_group_size=1, bootstrap_samples=200)
    ((group,),) = [
        audit.groups
        for audit in evaluate("classification", target, logits, (0, 1), {"g": groups}, spec, seed=0).fairness
    ]
    accuracy = group.metrics["accuracy"] or 0.0
    interval = group.intervals["accuracy"]
    expected = 2 * 1.96 * np.sqrt(accuracy * (1 - accuracy) / 60_000)
    assert interval.low < accuracy < interval.high
    assert interval.high - interval.low == pytest.approx(expected, rel=0.2)
