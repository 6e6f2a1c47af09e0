"""The monitor's Prometheus metrics. Per-feature series carry the feature and the test as labels."""

from __future__ import annotations

import math

from prometheus_client import Counter, Gauge, Histogram

from scaleml_workloads.drift.detector import DriftResult
from scaleml_workloads.drift.verdict import SHARE_RULE
from scaleml_workloads.monitor.accuracy import AccuracyEstimate

STATISTIC = Gauge("scaleml_drift_statistic", "Test statistic of a feature in the last window.", ["feature", "test"])
P_VALUE = Gauge(
    "scaleml_drift_p_value", "Raw p-value of a feature's deciding test in the last window.", ["feature", "test"]
)
Q_VALUE = Gauge(
    "scaleml_drift_q_value",
    "p-value of a feature's deciding test adjusted across the window's tests (Benjamini-Hochberg); drifted below "
    "thresholds.pValue.",
    ["feature", "test"],
)
EVIDENCE = Gauge(
    "scaleml_drift_feature_evidence",
    "Evidence of a feature's drift in the last window, 0 to 1, times its importance relative to the most important.",
    ["feature"],
)
KEPT_QUIET = Gauge(
    "scaleml_drift_kept_quiet",
    "1 when the rule (thresholds.shareOfDriftedFeatures) kept the last window quiet although features drifted.",
    ["rule"],
)
FEATURE_DRIFTED = Gauge("scaleml_drift_feature_drifted", "1 when the feature drifted in the last window.", ["feature"])
MISSING_FRACTION = Gauge(
    "scaleml_drift_missing_fraction", "Share of missing values of a feature in the last window.", ["feature"]
)
SCORE = Gauge("scaleml_drift_score", "Overall drift score of the last window, from 0 to 1.")
SHARE_DRIFTED = Gauge("scaleml_drift_share_of_drifted_features", "Share of features that drifted in the last window.")
DETECTED = Gauge("scaleml_drift_detected", "1 when the last window drifted.")
MULTIVARIATE_P_VALUE = Gauge("scaleml_drift_multivariate_p_value", "p-value of the multivariate (MMD) test.")
CONSECUTIVE = Gauge("scaleml_drift_consecutive_drifted_windows", "Drifted windows in a row.")
WINDOW_ROWS = Gauge("scaleml_drift_window_rows", "Rows in the last window.")
ROWS_SEEN = Counter("scaleml_drift_rows_seen", "Captured rows tested.")
ROWS_REJECTED = Counter(
    "scaleml_drift_rows_rejected", "Captured rows that could not be used (wrong shape, no valid value)."
)
CHECKS = Counter("scaleml_drift_checks", "Windows tested, by outcome.", ["outcome"])
CAPTURE_FILES_SKIPPED = Counter(
    "scaleml_drift_capture_files_skipped",
    "Capture files a window left out, each counted once, by reason: unreadable (truncated, not a capture file), "
    "layout (other tensors than the newer files'), too_large (more input data than a whole window holds).",
    ["reason"],
)
WINDOW_BYTES = Gauge("scaleml_drift_window_bytes", "Bytes of captured data read for the last window.")
CHECK_SECONDS = Histogram(
    "scaleml_drift_check_seconds",
    "Time to read and test one window.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ESTIMATED_ACCURACY = Gauge(
    "scaleml_drift_estimated_accuracy",
    "Accuracy of the last window estimated without labels (mean calibrated confidence); NaN without an estimate.",
)
VALIDATION_ACCURACY = Gauge(
    "scaleml_drift_validation_accuracy", "Accuracy of the reference version on its validation rows; NaN if unknown."
)
ACCURACY_DEGRADED = Gauge(
    "scaleml_drift_accuracy_degraded",
    "1 when the estimated accuracy is more than thresholds.accuracyDrop below the validation accuracy.",
)
REFERENCE_AVAILABLE = Gauge("scaleml_drift_reference_available", "0 while the reference profile cannot be read.")
REFERENCE_VERSION = Gauge("scaleml_drift_reference_version", "Model version whose training data is the reference.")

# A feature's deciding test, and the features themselves when the reference changes, differ from window to window:
# a series no window sets again would keep its last value, and an alert on it would fire forever.
PER_FEATURE = (STATISTIC, P_VALUE, Q_VALUE, EVIDENCE, FEATURE_DRIFTED, MISSING_FRACTION)


def record(result: DriftResult, consecutive: int) -> None:
    REFERENCE_AVAILABLE.set(1)
    for gauge in PER_FEATURE:
        gauge.clear()
    for feature in result.features:
        if feature.statistic is not None:
            STATISTIC.labels(feature.name, feature.test).set(feature.statistic)
        if feature.p_value is not None:
            P_VALUE.labels(feature.name, feature.test).set(feature.p_value)
        if feature.q_value is not None:
            Q_VALUE.labels(feature.name, feature.test).set(feature.q_value)
        EVIDENCE.labels(feature.name).set(feature.importance * feature.evidence)
        FEATURE_DRIFTED.labels(feature.name).set(int(feature.drifted))
        MISSING_FRACTION.labels(feature.name).set(feature.missing_fraction)
    if result.multivariate is not None:
        MULTIVARIATE_P_VALUE.set(result.multivariate.p_value)
    SCORE.set(result.score)
    SHARE_DRIFTED.set(result.share_drifted)
    DETECTED.set(int(result.drift_detected))
    KEPT_QUIET.labels(SHARE_RULE).set(int(result.kept_quiet_by == SHARE_RULE))
    CONSECUTIVE.set(consecutive)
    WINDOW_ROWS.set(result.rows)
    ROWS_SEEN.inc(result.rows)
    ROWS_REJECTED.inc(result.rows_rejected)


def record_accuracy(estimate: AccuracyEstimate, degraded: bool) -> None:
    ESTIMATED_ACCURACY.set(math.nan if estimate.estimated is None else estimate.estimated)
    VALIDATION_ACCURACY.set(math.nan if estimate.validation is None else estimate.validation)
    ACCURACY_DEGRADED.set(int(degraded))
