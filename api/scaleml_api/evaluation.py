"""What a trained version's evaluation found, as the model card holds it and the TrainingJob status reports it.

Written by the trainer (rank 0) on the validation rows at export; read by the ModelDeployment's
promotion gates (`scaleml_api.v1alpha1.modeldeployment.Gates`), which judge a version only by what
is recorded here. Every number is computed on the same validation rows as the card's metrics.

Metric names: accuracy, f1 and auc (higher is better) for classification; mae and rmse (lower is
better, in the target's units) for regression. F1 is the positive class's for two classes and the
macro average over classes otherwise; AUC is computed for two classes only.

The fairness measures of a sensitive feature compare the rate of the favourable outcome (the
positive label) between its groups, counting only groups with at least `minGroupSize` rows:
- demographicParityDifference: largest minus smallest selection rate (share predicted positive);
- equalOpportunityDifference: largest minus smallest true-positive rate (recall of the positive class);
- disparateImpactRatio: smallest over largest selection rate (1 is parity; the four-fifths rule asks >= 0.8);
- metricGap: best minus worst group on the evaluation's metric (always >= 0).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from scaleml_api.base import ApiModel

MetricName = Literal["accuracy", "f1", "auc", "mae", "rmse"]
HIGHER_IS_BETTER: Final[frozenset[str]] = frozenset({"accuracy", "f1", "auc"})
CLASSIFICATION_METRICS: Final[tuple[MetricName, ...]] = ("accuracy", "f1", "auc")
REGRESSION_METRICS: Final[tuple[MetricName, ...]] = ("mae", "rmse")

# The bounds the CRD puts on status.evaluation, which the trainer writes and the operator reads:
# a status the API server refuses would lose the modelVersion written with it.
MAX_TEXT: Final = 1024
MAX_NAME: Final = 256

FairnessMeasure = Literal["metricGap", "demographicParityDifference", "equalOpportunityDifference"]


def worse_by(metric: str, value: float, reference: float) -> float:
    """How much worse `value` is than `reference` on `metric`, in its units (negative: better)."""
    return reference - value if metric in HIGHER_IS_BETTER else value - reference


class Interval(ApiModel):
    """A bootstrap confidence interval: percentiles of the metric over resamples of the group's rows."""

    low: float
    high: float


class GroupResult(ApiModel):
    """One group of a sensitive feature: its rows and how the model does on them."""

    group: str = Field(description="The feature's value that defines the group; (missing) for absent values.")
    rows: int = Field(description="Validation rows in the group.")
    judged: bool = Field(description="Whether the group has at least minGroupSize rows and counts in the gaps.")
    metrics: dict[str, float | None] = Field(description="Task metrics on the group's rows; None where undefined.")
    intervals: dict[str, Interval] = Field(
        default={}, description="Per metric, its bootstrap confidence interval (empty without bootstrap samples)."
    )
    selection_rate: float | None = Field(default=None, description="Classification: share predicted positive.")
    true_positive_rate: float | None = Field(
        default=None, description="Classification: share of the positive rows predicted positive; None without any."
    )


class FeatureAudit(ApiModel):
    """The groups of one sensitive feature and the gaps between them."""

    feature: str
    groups: list[GroupResult]
    small_groups: list[str] = Field(
        default=[], description="Groups below minGroupSize: reported, but too small to judge, so not in the gaps."
    )
    worst_group: str | None = Field(default=None, description="The judged group with the worst metric.")
    worst_value: float | None = Field(default=None, description="That group's metric.")
    metric_gap: float | None = Field(default=None, description="Best minus worst judged group on the metric.")
    demographic_parity_difference: float | None = None
    equal_opportunity_difference: float | None = None
    disparate_impact_ratio: float | None = None
    note: str = Field(default="", description="Why a measure is missing, when one is.")


class Baseline(ApiModel):
    """An earlier version of the same model, evaluated on this version's validation rows."""

    version: int = Field(ge=1)
    metrics: dict[str, float | None] = Field(default={}, max_length=8, description="Its task metrics on these rows.")
    note: str = Field(
        default="", max_length=MAX_TEXT, description="Why it was not evaluated, when it was not (metrics empty)."
    )


class Evaluation(ApiModel):
    """A version's evaluation: overall metrics, per-group audits, and earlier versions on the same rows."""

    metric: MetricName = Field(description="The metric the summary and the gates use by default.")
    rows: int = Field(description="Validation rows evaluated.")
    metrics: dict[str, float | None] = Field(description="Task metrics on every validation row.")
    positive_label: str = Field(default="", description="Classification: the favourable outcome's label.")
    min_group_size: int = Field(default=0, description="Fewest rows a group needs to count in the gaps.")
    fairness: list[FeatureAudit] = Field(default=[], description="One audit per sensitive feature.")
    baselines: list[Baseline] = Field(default=[], description="Earlier versions on this version's validation rows.")
    note: str = Field(default="", description="What could not be evaluated, and why.")


class FeatureGaps(ApiModel):
    """The status's summary of one sensitive feature's audit."""

    feature: str = Field(max_length=MAX_NAME)
    worst_group: str | None = Field(default=None, max_length=MAX_NAME)
    worst_value: float | None = None
    metric_gap: float | None = None
    demographic_parity_difference: float | None = None
    equal_opportunity_difference: float | None = None
    disparate_impact_ratio: float | None = None
    small_groups: int = Field(default=0, description="Groups too small to judge (see the model card for which).")

    def measure(self, name: FairnessMeasure) -> float | None:
        values: dict[str, float | None] = {
            "metricGap": self.metric_gap,
            "demographicParityDifference": self.demographic_parity_difference,
            "equalOpportunityDifference": self.equal_opportunity_difference,
        }
        return values[name]


class EvaluationSummary(ApiModel):
    """`status.evaluation` of a TrainingJob: what the promotion gates read (the model card has the rest)."""

    metric: MetricName = Field(description="The evaluation's main metric: accuracy or rmse.")
    metrics: dict[str, float | None] = Field(
        default={}, max_length=8, description="Task metrics on the validation rows."
    )
    rows: int = Field(default=0, ge=0, description="Validation rows evaluated.")
    fairness: list[FeatureGaps] = Field(
        default=[], max_length=8, description="Per sensitive feature, its gaps and worst group."
    )
    baselines: list[Baseline] = Field(
        default=[],
        max_length=20,
        description="Earlier versions of the model evaluated on the same rows, for maxRegression.",
    )

    @classmethod
    def of(cls, evaluation: Evaluation) -> EvaluationSummary:
        return cls(
            metric=evaluation.metric,
            metrics=evaluation.metrics,
            rows=evaluation.rows,
            fairness=[
                FeatureGaps(
                    feature=audit.feature,
                    # A group is a value of the data: a long one is cut to what the status holds.
                    worst_group=audit.worst_group[:MAX_NAME] if audit.worst_group is not None else None,
                    worst_value=audit.worst_value,
                    metric_gap=audit.metric_gap,
                    demographic_parity_difference=audit.demographic_parity_difference,
                    equal_opportunity_difference=audit.equal_opportunity_difference,
                    disparate_impact_ratio=audit.disparate_impact_ratio,
                    small_groups=len(audit.small_groups),
                )
                for audit in evaluation.fairness
            ],
            baselines=evaluation.baselines,
        )
