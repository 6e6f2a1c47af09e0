"""Progress reporting from rank 0: the TrainingJob's status.progress, Prometheus metrics and the log.

The status goes through a `kubeapi.StatusSink` (the API server in a pod, a file in local mode): a slow or
unreachable API server delays nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Gauge, Histogram, start_http_server

from scaleml_api.evaluation import EvaluationSummary
from scaleml_workloads.kubeapi import StatusSink

log = logging.getLogger(__name__)

# At most one status patch per interval, besides epoch ends and the end of the run.
REPORT_INTERVAL_SECONDS: Final = 10.0

STEP = Gauge("scaleml_training_step", "Optimizer steps taken.")
TOTAL_STEPS = Gauge("scaleml_training_total_steps", "Optimizer steps the run will take.")
EPOCH = Gauge("scaleml_training_epoch", "Current epoch, from 0.")
LOSS = Gauge("scaleml_training_loss", "Training loss, mean since the previous report.")
VALIDATION_METRIC = Gauge("scaleml_training_validation_metric", "Accuracy or RMSE on the validation rows.")
SAMPLES_PER_SECOND = Gauge("scaleml_training_samples_per_second", "Training samples per second over the group.")
EVALUATION_METRIC = Gauge(
    "scaleml_training_evaluation_metric", "The exported version's task metrics on the validation rows.", ["metric"]
)
FAIRNESS_GAP = Gauge(
    "scaleml_training_fairness_gap",
    "Per sensitive feature, the exported version's gaps between judged groups (and the disparate impact ratio).",
    ["feature", "measure"],
)
CHECKPOINT_SECONDS = Histogram(
    "scaleml_training_checkpoint_seconds",
    "Time to write a checkpoint.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


@dataclass(frozen=True)
class Snapshot:
    """status.progress of the TrainingJob."""

    epoch: int
    step: int
    total_steps: int
    loss: float | None
    validation_metric: float | None
    samples_per_second: float

    def as_status(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "totalSteps": self.total_steps,
            "loss": self.loss,
            "validationMetric": self.validation_metric,
            "samplesPerSecond": round(self.samples_per_second, 1),
        }


class ProgressReporter:
    """Rank 0's reporting, throttled; on other ranks every method does nothing."""

    def __init__(
        self,
        patcher: StatusSink | None,
        *,
        leader: bool,
        metrics_port: int,
        interval: float = REPORT_INTERVAL_SECONDS,
    ) -> None:
        self.patcher = patcher if leader else None
        self.leader = leader
        self.interval = interval
        self._last = time.monotonic()
        if leader and metrics_port:
            start_http_server(metrics_port)
            log.info("serving Prometheus metrics on :%d", metrics_port)

    def due(self) -> bool:
        """Whether a throttled report is due now (cheap: called every step)."""
        return self.leader and time.monotonic() - self._last >= self.interval

    def report(self, snapshot: Snapshot) -> None:
        if not self.leader:
            return
        self._last = time.monotonic()
        STEP.set(snapshot.step)
        TOTAL_STEPS.set(snapshot.total_steps)
        EPOCH.set(snapshot.epoch)
        if snapshot.loss is not None:
            LOSS.set(snapshot.loss)
        if snapshot.validation_metric is not None:
            VALIDATION_METRIC.set(snapshot.validation_metric)
        SAMPLES_PER_SECOND.set(snapshot.samples_per_second)
        log.info(
            "epoch %d step %d/%d loss %s validation %s %.0f samples/s",
            snapshot.epoch,
            snapshot.step,
            snapshot.total_steps,
            "-" if snapshot.loss is None else f"{snapshot.loss:.4g}",
            "-" if snapshot.validation_metric is None else f"{snapshot.validation_metric:.4g}",
            snapshot.samples_per_second,
        )
        if self.patcher is not None:
            self.patcher.patch({"progress": snapshot.as_status()})

    def checkpoint_saved(self, seconds: float) -> None:
        if self.leader:
            CHECKPOINT_SECONDS.observe(seconds)

    def finish(self, model_version: int, evaluation: EvaluationSummary | None = None) -> None:
        """Report the exported version with its evaluation, in one write, and flush what is queued.

        One write: a ModelDeployment's gates never see the version without the evaluation they judge.
        """
        if evaluation is not None and self.leader:
            for name, value in evaluation.metrics.items():
                if value is not None:
                    EVALUATION_METRIC.labels(name).set(value)
            for gaps in evaluation.fairness:
                measures = {
                    "metricGap": gaps.metric_gap,
                    "demographicParityDifference": gaps.demographic_parity_difference,
                    "equalOpportunityDifference": gaps.equal_opportunity_difference,
                    "disparateImpactRatio": gaps.disparate_impact_ratio,
                }
                for measure, gap in measures.items():
                    if gap is not None:
                        FAIRNESS_GAP.labels(gaps.feature, measure).set(gap)
        if self.patcher is not None:
            patch: dict[str, Any] = {"modelVersion": model_version}
            if evaluation is not None:
                patch["evaluation"] = evaluation.to_wire()
            self.patcher.patch(patch)
            self.patcher.close()
