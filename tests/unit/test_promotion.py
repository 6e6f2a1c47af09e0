"""Promotion gates: which version a ModelDeployment serves, and what it says of a held-back one."""

from __future__ import annotations

from typing import Any

import pytest

from scaleml_api.evaluation import EvaluationSummary
from scaleml_api.v1alpha1.modeldeployment import GATE_FAILED, GATES_PASSED, NOT_GATED, PROMOTED_BY_ANNOTATION, Gates
from scaleml_operator.status.promotion import judge, promote


def _evaluation(accuracy: float = 0.9, served: float | None = 0.92, **gaps: Any) -> EvaluationSummary:
    return EvaluationSummary.model_validate(
        {
            "metric": "accuracy",
            "metrics": {"accuracy": accuracy, "f1": accuracy - 0.05, "auc": None},
            "rows": 500,
            "fairness": [{"feature": "region", "worstGroup": "islands", **gaps}] if gaps else [],
            "baselines": [{"version": 1, "metrics": {"accuracy": served}}] if served is not None else [],
        }
    )


def test_a_version_worse_than_the_served_one_by_more_than_max_regression_is_held_back() -> None:
    gates = Gates(max_regression=0.01)
    promotion = promote(gates, 2, 1, _evaluation(accuracy=0.88, served=0.92), "")
    assert (promotion.version, promotion.candidate, promotion.reason) == (1, 2, GATE_FAILED)
    assert promotion.message == (
        "Version 2 failed: maxRegression: accuracy 0.88 against 0.92 of served version 1, worse by 0.04 > 0.01. "
        "Version 1 stays served."
    )


def test_a_version_within_the_gates_is_served_and_the_message_has_the_numbers() -> None:
    gates = Gates(min_metric=0.85, max_regression=0.05)
    promotion = promote(gates, 2, 1, _evaluation(accuracy=0.9, served=0.92), "")
    assert (promotion.version, promotion.candidate, promotion.reason) == (2, None, GATES_PASSED)
    assert "accuracy 0.9 >= minMetric 0.85" in promotion.message
    assert "against 0.92 of served version 1" in promotion.message


def test_the_annotation_promotes_the_held_version_only() -> None:
    gates = Gates(min_metric=0.95)
    held = promote(gates, 3, 1, _evaluation(), "2")
    assert (held.version, held.candidate) == (1, 3)
    promoted = promote(gates, 3, 1, _evaluation(), "3")
    assert (promoted.version, promoted.reason) == (3, PROMOTED_BY_ANNOTATION)
    assert "minMetric: accuracy 0.9 < 0.95" in promoted.overruled
    # Once served, it stays so, and the condition still says how.
    assert promote(gates, 3, 3, _evaluation(), "3", overridden=3).reason == PROMOTED_BY_ANNOTATION


def test_the_first_version_that_fails_serves_nothing() -> None:
    promotion = promote(Gates(min_metric=0.95), 1, None, _evaluation(), "")
    assert (promotion.version, promotion.candidate) == (None, 1)
    assert promotion.message.endswith("No version is served yet.")


def test_max_regression_against_a_version_that_was_not_compared() -> None:
    evaluation = _evaluation(served=None)
    strict = judge(Gates(max_regression=0.01), evaluation, served=1)
    assert strict.failed == ["maxRegression: served version 1 was not compared on these rows"]
    lenient = judge(Gates(max_regression=0.01, require_evaluation=False), evaluation, served=1)
    assert lenient.ok
    assert lenient.skipped == strict.failed


def test_group_gaps_and_disparate_impact() -> None:
    evaluation = _evaluation(metricGap=0.12, demographicParityDifference=0.03, disparateImpactRatio=0.7)
    gates = Gates.model_validate(
        {"maxGroupGap": {"metricGap": 0.1, "demographicParityDifference": 0.05}, "minDisparateImpactRatio": 0.8}
    )
    verdict = judge(gates, evaluation, served=None)
    assert verdict.failed == [
        "maxGroupGap.metricGap: metricGap of region 0.12 > 0.1, worst group 'islands'",
        "minDisparateImpactRatio: disparate impact of region 0.7 < 0.8",
    ]
    assert verdict.passed == ["demographicParityDifference of region 0.03 <= 0.05"]


@pytest.mark.parametrize(
    ("evaluation", "expected"),
    [
        (None, "no evaluation (its TrainingJob held out no validation rows, or is gone)"),
        (_evaluation(), "maxGroupGap/minDisparateImpactRatio: no sensitive feature was evaluated"),
        (
            _evaluation(equalOpportunityDifference=None),
            "maxGroupGap.equalOpportunityDifference: equalOpportunityDifference of region was not measured "
            "(too few judged groups)",
        ),
    ],
)
def test_a_gate_without_its_number_fails_unless_evaluation_is_optional(
    evaluation: EvaluationSummary | None, expected: str
) -> None:
    gates = Gates.model_validate({"maxGroupGap": {"equalOpportunityDifference": 0.1}})
    assert judge(gates, evaluation, served=None).failed == [expected]


def test_an_empty_max_group_gap_asks_for_no_fairness_evaluation() -> None:
    gates = Gates.model_validate({"minMetric": 0.8, "maxGroupGap": {}})
    verdict = judge(gates, _evaluation(accuracy=0.93), served=None)
    assert (verdict.passed, verdict.failed) == (["accuracy 0.93 >= minMetric 0.8"], [])


def test_error_metrics_are_judged_downwards() -> None:
    evaluation = EvaluationSummary.model_validate(
        {
            "metric": "rmse",
            "metrics": {"rmse": 2.5, "mae": 2.0},
            "baselines": [{"version": 4, "metrics": {"rmse": 2.0}}],
        }
    )
    verdict = judge(Gates(max_metric=3.0, max_regression=0.2), evaluation, served=4)
    assert verdict.passed == ["rmse 2.5 <= maxMetric 3"]
    assert verdict.failed == ["maxRegression: rmse 2.5 against 2 of served version 4, worse by 0.5 > 0.2"]
    assert judge(Gates(metric="mae", max_metric=1.5), evaluation, served=4).failed == ["maxMetric: mae 2 > 1.5"]


def test_no_gates_serves_every_new_version() -> None:
    promotion = promote(None, 7, 6, None, "")
    assert (promotion.version, promotion.reason) == (7, NOT_GATED)
