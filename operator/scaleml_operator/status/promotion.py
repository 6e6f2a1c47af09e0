"""Promotion: whether a ModelDeployment rolls to the newest version its TrainingJobs exported (pure).

The gates judge the newest version by its TrainingJob's `status.evaluation`, written in the same
write as its `modelVersion`, so a version is never judged without its numbers. A version that
fails is held back: the Deployment keeps serving what it serves (nothing, before any version
passed), and the Promoted condition names each failed gate with its numbers. The annotation
`scaleml.dev/promote=<version>` promotes the held version anyway; status.override records it.

Once served, a version is not judged again: gates decide what rolls out, and tightening them
later does not take down what runs. A pinned `model.version` is served as asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from scaleml_api.evaluation import EvaluationSummary, FairnessMeasure, worse_by
from scaleml_api.v1alpha1.modeldeployment import (
    GATE_FAILED,
    GATES_PASSED,
    NOT_GATED,
    PROMOTE_ANNOTATION,
    PROMOTED_BY_ANNOTATION,
    Gates,
)

_GAPS: dict[str, FairnessMeasure] = {
    "metric_gap": "metricGap",
    "demographic_parity_difference": "demographicParityDifference",
    "equal_opportunity_difference": "equalOpportunityDifference",
}


def _number(value: float) -> str:
    return f"{value:.4g}"


@dataclass
class Verdict:
    """What the gates said of one version: each failed gate, and what was skipped for want of a number."""

    failed: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def missing(self, gates: Gates, what: str) -> None:
        (self.failed if gates.require_evaluation else self.skipped).append(what)

    def message(self, version: int) -> str:
        parts = [
            f"Version {version} failed: {'; '.join(self.failed)}." if self.failed else f"Version {version} passed."
        ]
        if self.passed:
            parts.append(f"Passed: {'; '.join(self.passed)}.")
        if self.skipped:
            parts.append(f"Skipped (requireEvaluation is false): {'; '.join(self.skipped)}.")
        return " ".join(parts)


def evaluation_of(raw: Any) -> EvaluationSummary | None:
    """The evaluation a TrainingJob's status records (`status.evaluation`), or None if absent or unreadable."""
    if not raw:
        return None
    try:
        return EvaluationSummary.model_validate(raw)
    except ValidationError:
        return None


def judge(gates: Gates, evaluation: EvaluationSummary | None, served: int | None) -> Verdict:
    """Each gate on `evaluation`; `served` is the version being served, for maxRegression."""
    verdict = Verdict()
    if evaluation is None:
        verdict.missing(gates, "no evaluation (its TrainingJob held out no validation rows, or is gone)")
        return verdict
    metric = gates.metric or evaluation.metric
    value = evaluation.metrics.get(metric)
    bounds = [("minMetric", gates.min_metric, 1.0), ("maxMetric", gates.max_metric, -1.0)]
    for name, limit, sign in bounds:
        if limit is None:
            continue
        if value is None:
            verdict.missing(gates, f"{name}: {metric} was not measured")
        elif sign * (value - limit) >= 0:
            verdict.passed.append(f"{metric} {_number(value)} {'>=' if sign > 0 else '<='} {name} {_number(limit)}")
        else:
            verdict.failed.append(f"{name}: {metric} {_number(value)} {'<' if sign > 0 else '>'} {_number(limit)}")
    if gates.max_regression is not None and served is not None:
        _regression(verdict, gates, evaluation, metric, value, served)
    # An empty maxGroupGap sets no bound, so it asks for no fairness evaluation either.
    gap_limits = gates.max_group_gap.model_dump(exclude_none=True) if gates.max_group_gap else {}
    fairness_gates = bool(gap_limits) or gates.min_disparate_impact_ratio is not None
    if fairness_gates and not evaluation.fairness:
        verdict.missing(gates, "maxGroupGap/minDisparateImpactRatio: no sensitive feature was evaluated")
        return verdict
    for gaps in evaluation.fairness if fairness_gates else ():
        for attribute, measure in _GAPS.items():
            limit = getattr(gates.max_group_gap, attribute, None) if gates.max_group_gap else None
            if limit is None:
                continue
            gap = gaps.measure(measure)
            where = f"{measure} of {gaps.feature}"
            if gap is None:
                verdict.missing(gates, f"maxGroupGap.{measure}: {where} was not measured (too few judged groups)")
            elif gap <= limit:
                verdict.passed.append(f"{where} {_number(gap)} <= {_number(limit)}")
            else:
                worst = f", worst group {gaps.worst_group!r}" if measure == "metricGap" and gaps.worst_group else ""
                verdict.failed.append(f"maxGroupGap.{measure}: {where} {_number(gap)} > {_number(limit)}{worst}")
        if (least := gates.min_disparate_impact_ratio) is not None:
            ratio = gaps.disparate_impact_ratio
            if ratio is None:
                verdict.missing(gates, f"minDisparateImpactRatio: not measured for {gaps.feature}")
            elif ratio >= least:
                verdict.passed.append(f"disparate impact of {gaps.feature} {_number(ratio)} >= {_number(least)}")
            else:
                verdict.failed.append(
                    f"minDisparateImpactRatio: disparate impact of {gaps.feature} {_number(ratio)} < {_number(least)}"
                )
    return verdict


def _regression(
    verdict: Verdict, gates: Gates, evaluation: EvaluationSummary, metric: str, value: float | None, served: int
) -> None:
    limit = gates.max_regression or 0.0
    baseline = next((entry for entry in evaluation.baselines if entry.version == served), None)
    before = baseline.metrics.get(metric) if baseline is not None else None
    if value is None or before is None:
        why = f" ({baseline.note})" if baseline is not None and baseline.note else ""
        verdict.missing(gates, f"maxRegression: served version {served} was not compared on these rows{why}")
        return
    worse = worse_by(metric, value, before)
    numbers = f"{metric} {_number(value)} against {_number(before)} of served version {served}"
    if worse <= limit:
        verdict.passed.append(f"{numbers} (maxRegression {_number(limit)})")
    else:
        verdict.failed.append(f"maxRegression: {numbers}, worse by {_number(worse)} > {_number(limit)}")


@dataclass(frozen=True)
class Promotion:
    """Which version to serve, and what the Promoted condition and status say of it."""

    version: int | None
    reason: str
    message: str
    # The newest version, when it is held back.
    candidate: int | None = None
    # What the gates said of a version the annotation promotes (the override to record), else "".
    overruled: str = ""


def promote(
    gates: Gates | None,
    newest: int | None,
    served: int | None,
    evaluation: EvaluationSummary | None,
    annotation: str,
    overridden: int | None = None,
) -> Promotion:
    """Which version to serve of `newest` (the highest exported) and `served` (what the Deployment runs).

    `evaluation` is the newest version's, `annotation` the promote annotation's value (or ""), and
    `overridden` the version status.override records.
    """
    if newest is None:
        return Promotion(None, NOT_GATED, "No version has been exported yet.")
    if gates is None:
        return Promotion(newest, NOT_GATED, "No promotion gates: every new version is served.")
    if newest == served:
        if overridden == newest:
            return Promotion(newest, PROMOTED_BY_ANNOTATION, f"Version {newest} is served on the promote annotation.")
        return Promotion(newest, GATES_PASSED, f"Version {newest} is served; the gates judge newer versions.")
    verdict = judge(gates, evaluation, served)
    if verdict.ok:
        return Promotion(newest, GATES_PASSED, verdict.message(newest))
    failed = verdict.message(newest)
    if annotation.strip() == str(newest):
        message = f"Version {newest} is served on the annotation scaleml.dev/promote={newest}, although: {failed}"
        return Promotion(newest, PROMOTED_BY_ANNOTATION, message, overruled=failed)
    keeps = f" Version {served} stays served." if served is not None else " No version is served yet."
    return Promotion(served, GATE_FAILED, failed + keeps, candidate=newest)


def promote_deployment(
    deployment: Mapping[str, Any], gates: Gates | None, newest: int | None, served: int | None, evaluation: Any
) -> Promotion:
    """`promote` for a ModelDeployment (as the API returns it): its promote annotation and recorded override.

    `evaluation` is the newest version's `status.evaluation`, as its TrainingJob wrote it (or None).
    """
    annotation = (deployment["metadata"].get("annotations") or {}).get(PROMOTE_ANNOTATION, "")
    overridden = ((deployment.get("status") or {}).get("override") or {}).get("version")
    return promote(gates, newest, served, evaluation_of(evaluation), annotation, overridden)
