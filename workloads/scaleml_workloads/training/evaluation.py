"""Evaluating a trained model on the validation rows: overall, per group of each sensitive feature, and the gaps.

numpy only, on the model's outputs (logits or values) that the caller computed: the same numbers
come out whatever ran the model. What each measure means is in `scaleml_api.evaluation`; the tests
hold them to Fairlearn's `MetricFrame` and difference functions on the same predictions.

Groups smaller than `minGroupSize` are reported with their numbers but marked not judged and kept
out of every gap: a gap between a group of 3 rows and one of 3,000 says nothing about the model.
The bootstrap intervals resample a group's rows with replacement (seeded), and take the 2.5th and
97.5th percentiles of each metric over the resamples (for very large groups, see `intervals`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from scaleml_api.evaluation import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    Evaluation,
    FeatureAudit,
    GroupResult,
    Interval,
    MetricName,
)
from scaleml_api.v1alpha1.trainingjob import EvaluationSpec
from scaleml_workloads.training.data import Label, Task

Array = npt.NDArray[np.generic]
_CONFIDENCE: Final = (2.5, 97.5)
# Rows of one bootstrap resample at most (see `intervals`).
MAX_BOOTSTRAP_ROWS: Final = 20_000


def positive_index(labels: Sequence[Label], positive_label: str) -> int | None:
    """The class index of the favourable outcome: the label written as `positive_label`, or the second of two.

    None for a multi-class model without one. Raises ValueError when `positive_label` is no label.
    """
    if positive_label:
        for index, label in enumerate(labels):
            written = str(label).lower() if isinstance(label, bool) else str(label)
            if written == positive_label or (isinstance(label, bool) and written == positive_label.lower()):
                return index
        raise ValueError(
            f"evaluation.positiveLabel {positive_label!r} is not a label of the target "
            f"(labels: {', '.join(repr(str(label)) for label in labels)})"
        )
    return 1 if len(labels) == 2 else None


def accuracy(target: Array, predicted: Array) -> float | None:
    return float(np.mean(target == predicted)) if len(target) else None


def f1(target: Array, predicted: Array, positive: int | None, classes: int) -> float | None:
    """F1 of the positive class for two classes, else the mean F1 over the classes present (macro)."""
    if not len(target):
        return None
    chosen = [positive] if classes == 2 and positive is not None else range(classes)
    scores = []
    for cls in chosen:
        hit = np.count_nonzero((predicted == cls) & (target == cls))
        predicted_count, actual_count = np.count_nonzero(predicted == cls), np.count_nonzero(target == cls)
        if classes > 2 and actual_count == 0 and predicted_count == 0:
            continue
        scores.append(2 * hit / (predicted_count + actual_count) if predicted_count + actual_count else 0.0)
    return float(np.mean(scores)) if scores else None


def auc(positive_hit: Array, score: Array) -> float | None:
    """ROC AUC of `score` against `positive_hit` (target == positive), by ranks with tied scores averaged."""
    positives = int(np.count_nonzero(positive_hit))
    negatives = len(positive_hit) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=np.float64)
    ranks[order] = np.arange(1, len(score) + 1)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return float((ranks[positive_hit].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def mae(target: Array, predicted: Array) -> float | None:
    return float(np.mean(np.abs(predicted.astype(np.float64) - target.astype(np.float64)))) if len(target) else None


def rmse(target: Array, predicted: Array) -> float | None:
    return (
        float(np.sqrt(np.mean((predicted.astype(np.float64) - target.astype(np.float64)) ** 2)))
        if len(target)
        else None
    )


class Predictions:
    """A model's answers on the validation rows, and the task metrics of any subset of them."""

    def __init__(self, task: Task, target: Array, outputs: Array, labels: Sequence[Label], positive: int | None):
        self.task = task
        self.target = target
        self.positive = positive
        self.classes = len(labels)
        if task == "classification":
            logits = outputs.astype(np.float64)
            self.predicted = logits.argmax(axis=-1)
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
            self.score: Array | None = probabilities[:, positive] if positive is not None else None
        else:
            self.predicted = outputs.reshape(len(target), -1)[:, 0].astype(np.float64)
            self.score = None

    @property
    def names(self) -> tuple[MetricName, ...]:
        return CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS

    def metrics(self, rows: npt.NDArray[np.int64] | slice) -> dict[str, float | None]:
        target, predicted = self.target[rows], self.predicted[rows]
        if self.task == "regression":
            return {"mae": mae(target, predicted), "rmse": rmse(target, predicted)}
        score = self.score[rows] if self.score is not None else None
        area = auc(target == self.positive, score) if score is not None and self.classes == 2 else None
        return {
            "accuracy": accuracy(target, predicted),
            "f1": f1(target, predicted, self.positive, self.classes),
            "auc": area,
        }

    def selection_rate(self, rows: npt.NDArray[np.int64]) -> float | None:
        if self.positive is None or not len(rows):
            return None
        return float(np.mean(self.predicted[rows] == self.positive))

    def true_positive_rate(self, rows: npt.NDArray[np.int64]) -> float | None:
        if self.positive is None:
            return None
        actual = rows[self.target[rows] == self.positive]
        return float(np.mean(self.predicted[actual] == self.positive)) if len(actual) else None


def intervals(
    predictions: Predictions, rows: npt.NDArray[np.int64], samples: int, generator: np.random.Generator
) -> dict[str, Interval]:
    """Per metric, the 95% bootstrap interval over `samples` resamples of `rows`.

    A group of more than MAX_BOOTSTRAP_ROWS rows is resampled MAX_BOOTSTRAP_ROWS at a time (the
    m-out-of-n bootstrap), and the interval's distance from the group's metric is scaled by
    sqrt(m / n): the spread of a mean-like metric shrinks as one over the root of the rows. Cost
    then stays flat in the group's size.
    """
    if samples == 0 or len(rows) < 2:
        return {}
    size = min(len(rows), MAX_BOOTSTRAP_ROWS)
    scale = math.sqrt(size / len(rows))
    centre = predictions.metrics(rows)
    draws: dict[str, list[float]] = {}
    for _ in range(samples):
        resample = rows[generator.integers(0, len(rows), size=size)]
        for name, value in predictions.metrics(resample).items():
            if value is not None:
                draws.setdefault(name, []).append(value)
    found = {}
    for name, values in draws.items():
        metric = centre.get(name)
        # A metric undefined on most resamples (AUC of a group with one positive row) has no honest interval.
        if metric is None or len(values) < samples // 2:
            continue
        low, high = np.percentile(values, _CONFIDENCE)
        found[name] = Interval(low=metric + scale * (low - metric), high=metric + scale * (high - metric))
    return found


def _spread(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return float(max(present) - min(present)) if len(present) >= 2 else None


def audit(
    predictions: Predictions,
    feature: str,
    groups: npt.NDArray[np.str_],
    spec: EvaluationSpec,
    metric: MetricName,
    generator: np.random.Generator,
) -> FeatureAudit:
    """One sensitive feature: every group's numbers, and the gaps between the judged ones."""
    results = []
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group).astype(np.int64)
        results.append(
            GroupResult(
                group=str(group),
                rows=len(rows),
                judged=len(rows) >= spec.min_group_size,
                metrics=predictions.metrics(rows),
                intervals=intervals(predictions, rows, spec.bootstrap_samples, generator),
                selection_rate=predictions.selection_rate(rows),
                true_positive_rate=predictions.true_positive_rate(rows),
            )
        )
    judged = [result for result in results if result.judged]
    scored = [result for result in judged if result.metrics.get(metric) is not None]
    worst = None
    if scored:
        pick = min if metric in HIGHER_IS_BETTER else max
        worst = pick(scored, key=lambda result: result.metrics[metric] or 0.0)
    notes = []
    if len(judged) < 2:
        notes.append(f"{len(judged)} group(s) have at least minGroupSize={spec.min_group_size} rows: no gap to measure")
    if predictions.task == "classification" and predictions.positive is None:
        notes.append("no positive label (evaluation.positiveLabel) for a model of more than two classes")
    rates = [result.selection_rate for result in judged]
    highest = max((rate for rate in rates if rate is not None), default=None)
    lowest = min((rate for rate in rates if rate is not None), default=None)
    ratio = None
    if len(judged) >= 2 and highest is not None and lowest is not None:
        ratio = lowest / highest if highest > 0 else 1.0
    return FeatureAudit(
        feature=feature,
        groups=results,
        small_groups=[result.group for result in results if not result.judged],
        worst_group=worst.group if worst else None,
        worst_value=worst.metrics[metric] if worst else None,
        metric_gap=_spread([result.metrics.get(metric) for result in judged]),
        demographic_parity_difference=_spread(rates),
        equal_opportunity_difference=_spread([result.true_positive_rate for result in judged]),
        disparate_impact_ratio=ratio,
        note="; ".join(notes),
    )


def evaluate(
    task: Task,
    target: Array,
    outputs: Array,
    labels: Sequence[Label],
    groups: Mapping[str, npt.NDArray[np.str_]],
    spec: EvaluationSpec,
    *,
    seed: int,
) -> Evaluation:
    """The evaluation of a model's `outputs` on validation rows with `target` and, per sensitive feature, `groups`."""
    positive = positive_index(labels, spec.positive_label) if task == "classification" else None
    predictions = Predictions(task, target, outputs, labels, positive)
    metric: MetricName = "accuracy" if task == "classification" else "rmse"
    generator = np.random.default_rng(seed)
    return Evaluation(
        metric=metric,
        rows=len(target),
        metrics=predictions.metrics(slice(None)),
        positive_label=str(labels[positive]) if positive is not None else "",
        min_group_size=spec.min_group_size,
        fairness=[audit(predictions, feature, values, spec, metric, generator) for feature, values in groups.items()],
    )


def task_metrics(
    task: Task, target: Array, outputs: Array, labels: Sequence[Label], positive_label: str
) -> dict[str, float | None]:
    """The overall task metrics of another model's outputs on the same rows (an earlier version)."""
    positive = positive_index(labels, positive_label) if task == "classification" else None
    return Predictions(task, target, outputs, labels, positive).metrics(slice(None))
