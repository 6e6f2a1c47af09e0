"""One monitor: every `window.every`, test the newest captured rows, then report them everywhere.

A window is only tested when it holds rows newer than the last one tested: the same rows twice
would count as two drifted windows and bring retraining forward. The run of drifted windows and
when it began are resumed from the DriftMonitor's status after a restart.

A window is bounded in bytes as well as rows: at most WINDOW_MAX_BYTES of captured data are read,
each file's size checked before its data is. A fixed bound rather than a field of the spec: the
monitor's memory limit is the operator's (builders.driftmonitor), not the user's, and the tests
hold a few copies of the window's input in float64, so this bound keeps a check well within it
whatever the rows hold (a window of 5000 rows of 6 KiB fits). A capture file that cannot be read
(truncated, foreign, other tensors) is left out, counted once in
scaleml_drift_capture_files_skipped_total and named in the result's messages; it never fails a check.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from scaleml_api.base import duration_seconds
from scaleml_api.runtime import MonitorRun
from scaleml_api.v1alpha1.driftmonitor import (
    ACCURACY_DEGRADED,
    ACCURACY_RECOVERED,
    DRIFT_DETECTED_EVENT,
    DRIFT_RESOLVED,
    RUN_FIELDS,
    WINDOW_MAX_BYTES,
    RetrainRule,
)
from scaleml_workloads.atomic import write_text_atomically
from scaleml_workloads.capture.files import CaptureWindow, SkipReason, read_window
from scaleml_workloads.drift.detector import DriftDetector, DriftResult
from scaleml_workloads.kubeapi import InClusterClient, StatusSink, post_event, read_status, status_sink
from scaleml_workloads.monitor import metrics
from scaleml_workloads.monitor.accuracy import NOT_CALIBRATED, AccuracyEstimate, AccuracyEstimator
from scaleml_workloads.monitor.report import TrendPoint, render

log = logging.getLogger(__name__)

PLURAL: Final = "driftmonitors"
LATEST_REPORT: Final = "latest.html"
KEPT_REPORTS: Final = 100
TREND_POINTS: Final = 200


# Events stay under 1 KiB; the status's verdict under its schema's bound.
EVENT_MAX_CHARS: Final = 1000
VERDICT_MAX_CHARS: Final = 1024


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Episode:
    """The run of drifted (or degraded) windows the monitor is in (none: consecutive 0)."""

    consecutive: int = 0
    since: str | None = None

    def advance(self, drifted: bool, now: datetime) -> tuple[bool, bool]:
        """Counts one window; returns (the run started, the run ended)."""
        was = self.consecutive > 0
        if drifted:
            self.consecutive += 1
            self.since = self.since or _timestamp(now)
        else:
            self.consecutive, self.since = 0, None
        return drifted and not was, was and not drifted


@dataclass
class Reporter:
    """Where results go besides metrics: the DriftMonitor's status and its Events (off outside a cluster)."""

    run: MonitorRun
    patcher: StatusSink | None = None
    client: InClusterClient | None = None

    @classmethod
    def for_run(cls, run: MonitorRun) -> Reporter:
        if not run.report_status:
            return cls(run)
        patcher = status_sink(run.status_file, run.namespace, PLURAL, run.name)
        # A local run has no API server to post Events to or resume from.
        client = None if run.status_file else InClusterClient()
        return cls(run, patcher, client if client is not None and client.enabled else None)

    def resume(self, counted: RetrainRule = "drift") -> Episode:
        """The run of drifted (or degraded) windows, as the status last recorded it."""
        if self.client is None:
            return Episode()
        status = read_status(self.client, self.run.namespace, PLURAL, self.run.name)
        _, count, since = RUN_FIELDS[counted]
        return Episode(int(status.get(count) or 0), status.get(since))

    def status(self, fields: dict[str, Any]) -> None:
        if self.patcher is not None:
            self.patcher.patch(fields)

    def event(self, type: str, reason: str, message: str) -> None:
        if self.client is None:
            return
        involved = {"kind": "DriftMonitor", "name": self.run.name, "namespace": self.run.namespace}
        post_event(self.client, involved, type=type, reason=reason, message=message)

    def close(self) -> None:
        if self.patcher is not None:
            self.patcher.close()


def _accuracy_status(estimate: AccuracyEstimate, degraded: bool, run: Episode) -> dict[str, Any]:
    """The status fields of a window's estimated accuracy; null (removed) where there is no value."""
    return {
        "estimatedAccuracy": None if estimate.estimated is None else round(estimate.estimated, 6),
        "validationAccuracy": None if estimate.validation is None else round(estimate.validation, 6),
        "accuracyEstimateMessage": estimate.message or None,
        "degraded": degraded,
        "consecutiveDegradedWindows": run.consecutive,
        "degradedSince": run.since,
    }


@dataclass
class Monitor:
    run: MonitorRun
    detector: DriftDetector
    reporter: Reporter
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    episode: Episode = field(default_factory=Episode)
    accuracy: AccuracyEstimator = field(default_factory=lambda: AccuracyEstimator(None, NOT_CALIBRATED))
    degradation: Episode = field(default_factory=Episode)
    trend: deque[TrendPoint] = field(default_factory=lambda: deque(maxlen=TREND_POINTS))
    last_tested: float | None = None
    last_result: DriftResult | None = None
    # What every result says of the reference (e.g. that the profile keeps no rows).
    notes: list[str] = field(default_factory=list)
    window_max_bytes: int = WINDOW_MAX_BYTES
    # The files skipped by the last check, so that each is counted once.
    _skipped: set[tuple[str, SkipReason]] = field(default_factory=set, init=False)

    def check(self) -> DriftResult | None:
        """Tests the newest window if it holds new rows; returns its result (None: nothing new to test)."""
        started = time.monotonic()
        # Rows another version answered come from another model, often with other category codes: never the reference's.
        version = None if self.run.model_version is None else str(self.run.model_version)
        # Files of the layout before each ModelDeployment had a directory, at the claim's root, until they are gone;
        # other models' rows there (or in the directory, should any get in) are no traffic of the target's.
        legacy = [self.run.legacy_captures_dir] if self.run.legacy_captures_dir else []
        read = read_window(
            [self.run.captures_dir, *legacy],
            self.run.spec.window.size,
            max_bytes=self.window_max_bytes,
            strings=False,
            model=self.run.model_name,
            model_version=version,
        )
        self._count_skipped(read)
        metrics.WINDOW_BYTES.set(read.nbytes)
        window = read.columns
        newest = (
            float(np.max(window["timestamp"]))
            if window.get("timestamp") is not None and len(window["timestamp"])
            else None
        )
        if newest is None:
            metrics.CHECKS.labels("no_data").inc()
            others = "".join(
                f" ({count} rows of other {what} left out)"
                for count, what in ((read.other_models, "models"), (read.other_versions, "model versions"))
                if count
            )
            log.info("no captured rows in %s yet%s", self.run.captures_dir, others)
            return None
        if newest == self.last_tested:
            metrics.CHECKS.labels("no_new_data").inc()
            log.info("no rows captured since the last check; not testing the same window again")
            return None
        result = self.detector.check(window, expected_rows=self.run.spec.window.size)
        notes = [*self.notes, *self._window_notes(read)]
        if notes:
            result = dataclasses.replace(result, messages=[*result.messages, *notes])
        self.last_tested, self.last_result = newest, result
        now = self.clock()
        started_drift, ended_drift = self.episode.advance(result.drift_detected, now)
        estimate = self.accuracy.estimate(window)
        degraded = estimate.degraded(self.run.spec.thresholds.accuracy_drop)
        started_degraded, ended_degraded = self.degradation.advance(degraded, now)
        metrics.record(result, self.episode.consecutive)
        metrics.record_accuracy(estimate, degraded)
        metrics.CHECKS.labels("drift" if result.drift_detected else "no_drift").inc()
        metrics.CHECK_SECONDS.observe(time.monotonic() - started)
        self.trend.append(TrendPoint(now, result.score, result.drift_detected))
        self.reporter.status(
            {
                "lastCheckTime": _timestamp(now),
                "driftDetected": result.drift_detected,
                "driftScore": round(min(max(result.score, 0.0), 1.0), 6),
                "driftedFeatures": result.drifted_features,
                # Why it drifted or not, so that drifted features next to no drift never stand unexplained.
                "verdict": _clip(result.verdict, VERDICT_MAX_CHARS),
                "topFeatures": [
                    {"name": top.name, "importance": round(top.importance, 6), "evidence": round(top.evidence, 6)}
                    for top in result.top_features
                ],
                "windowSize": result.rows,
                "consecutiveDriftedWindows": self.episode.consecutive,
                # A merge patch with null removes the field: no drift, no start of one.
                "driftSince": self.episode.since,
                **_accuracy_status(estimate, degraded, self.degradation),
            }
        )
        if started_drift:
            features = ", ".join(result.drifted_features) or "the multivariate test"
            message = f"Drift in {features} (score {result.score:.2f}, {result.rows} rows): {result.verdict}"
            self.reporter.event("Warning", DRIFT_DETECTED_EVENT, _clip(message, EVENT_MAX_CHARS))
        elif ended_drift:
            message = f"The window of {result.rows} rows no longer drifts: {result.verdict}"
            self.reporter.event("Normal", DRIFT_RESOLVED, _clip(message, EVENT_MAX_CHARS))
        if started_degraded and estimate.estimated is not None and estimate.validation is not None:
            self.reporter.event(
                "Warning",
                ACCURACY_DEGRADED,
                f"Estimated accuracy {estimate.estimated:.3f} over {estimate.rows} answers, "
                f"{estimate.validation - estimate.estimated:.3f} below the validation accuracy "
                f"{estimate.validation:.3f}.",
            )
        elif ended_degraded:
            self.reporter.event("Normal", ACCURACY_RECOVERED, "The estimated accuracy is no longer degraded.")
        self._write_report(result, now, estimate)
        log.info(
            "window of %d rows: %s, score %.3f, drifted: %s; %s",
            result.rows,
            "drift" if result.drift_detected else "no drift",
            result.score,
            ", ".join(result.drifted_features) or "none",
            result.verdict,
        )
        return result

    def _count_skipped(self, read: CaptureWindow) -> None:
        skipped = {(str(skip.path), skip.reason) for skip in read.skipped}
        for _path, reason in skipped - self._skipped:
            metrics.CAPTURE_FILES_SKIPPED.labels(reason).inc()
        # Only the files skipped now are remembered: the set stays as small as the directory.
        self._skipped = skipped

    def _window_notes(self, read: CaptureWindow) -> list[str]:
        notes = []
        if read.bytes_limited:
            notes.append(
                f"the window holds {read.rows} rows ({read.nbytes} bytes): the next older capture file would have "
                f"taken it past {self.window_max_bytes} bytes"
            )
        if read.other_models:
            notes.append(
                f"{read.other_models} captured rows were left out: another model than {self.run.model_name} "
                "answered them"
            )
        if read.other_versions:
            notes.append(
                f"{read.other_versions} captured rows were left out: another model version than "
                f"{self.run.model_version}, whose training data is the reference, answered them"
            )
        if read.skipped:
            reasons = Counter(skip.reason for skip in read.skipped)
            counts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
            notes.append(f"{len(read.skipped)} capture files were left out ({counts}); the monitor's log names them")
        return notes

    def _write_report(self, result: DriftResult, now: datetime, accuracy: AccuracyEstimate) -> None:
        directory = Path(self.run.reports_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            page = render(
                result,
                monitor=f"{self.run.namespace}/{self.run.name}",
                checked_at=now,
                reference_version=self.run.model_version,
                trend=list(self.trend),
                accuracy=accuracy,
            )
            name = f"report-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}.html"
            write_text_atomically(directory / name, page)
            write_text_atomically(directory / LATEST_REPORT, page)
            for old in sorted(directory.glob("report-*.html"))[:-KEPT_REPORTS]:
                old.unlink(missing_ok=True)
        except OSError as error:
            # A full or read-only report volume must not stop the monitoring itself.
            log.warning("could not write the drift report to %s: %s", directory, error)

    def run_forever(self, stop: threading.Event) -> None:
        every = duration_seconds(self.run.spec.window.every)
        while not stop.is_set():
            try:
                self.check()
            except Exception:
                # One bad window (or volume hiccup) must not end the monitor: log it and try the next.
                metrics.CHECKS.labels("error").inc()
                log.exception("the check failed")
            stop.wait(every)
        self.reporter.close()
