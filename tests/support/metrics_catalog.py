"""The metrics ScaleML's dashboards and alerts query, by the component that exports them.

Each component's names are proven by a test that scrapes that component's real /metrics endpoint
(tests/apiserver/test_exported_metrics.py for the operator, tests/workloads/test_exported_metrics.py
for the rest). tests/unit/test_monitoring.py reads every dashboard query and alert with Prometheus's
own parser and allows only these names, and kube-state-metrics' below; each name here must be used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

EXPORTED: Final[Mapping[str, frozenset[str]]] = {
    # `scaleml operator`, port 8081 (scaleml_operator.handlers.metrics).
    "operator": frozenset(
        {
            "scaleml_operator_handler_duration_seconds_bucket",
            "scaleml_operator_handler_duration_seconds_count",
            "scaleml_operator_handler_errors_total",
            "scaleml_operator_handler_retries_total",
            "scaleml_operator_objects",
            "scaleml_operator_reaction_lag_seconds_bucket",
        }
    ),
    # Rank 0 of a training run, port 9090 (scaleml_workloads.training.report).
    "training": frozenset(
        {
            "scaleml_training_checkpoint_seconds_bucket",
            "scaleml_training_epoch",
            "scaleml_training_loss",
            "scaleml_training_samples_per_second",
            "scaleml_training_step",
            "scaleml_training_total_steps",
            "scaleml_training_validation_metric",
        }
    ),
    # Triton Inference Server, port 8002, with the options a ModelDeployment's pod runs it with.
    "triton": frozenset(
        {
            "nv_inference_compute_infer_duration_us",
            "nv_inference_compute_input_duration_us",
            "nv_inference_compute_output_duration_us",
            "nv_inference_count",
            "nv_inference_exec_count",
            "nv_inference_pending_request_count",
            "nv_inference_queue_duration_us",
            "nv_inference_queue_summary_us",
            "nv_inference_request_duration_us",
            "nv_inference_request_failure",
            "nv_inference_request_success",
            "nv_inference_request_summary_us",
        }
    ),
    # The capture converter, port 9091 (scaleml_workloads.capture.metrics).
    "capture": frozenset(
        {
            "scaleml_capture_rows_written_total",
            "scaleml_capture_samples_dropped_total",
            "scaleml_capture_samples_written_total",
            "scaleml_capture_tensors_untraced_total",
            "scaleml_capture_trace_files_dropped_total",
        }
    ),
    # A DriftMonitor's monitor, port 9090 (scaleml_workloads.monitor.metrics).
    "monitor": frozenset(
        {
            "scaleml_drift_accuracy_degraded",
            "scaleml_drift_check_seconds_bucket",
            "scaleml_drift_checks_total",
            "scaleml_drift_consecutive_drifted_windows",
            "scaleml_drift_detected",
            "scaleml_drift_estimated_accuracy",
            "scaleml_drift_feature_drifted",
            "scaleml_drift_feature_evidence",
            "scaleml_drift_kept_quiet",
            "scaleml_drift_missing_fraction",
            "scaleml_drift_multivariate_p_value",
            "scaleml_drift_p_value",
            "scaleml_drift_q_value",
            "scaleml_drift_reference_available",
            "scaleml_drift_reference_version",
            "scaleml_drift_rows_rejected_total",
            "scaleml_drift_rows_seen_total",
            "scaleml_drift_score",
            "scaleml_drift_share_of_drifted_features",
            "scaleml_drift_statistic",
            "scaleml_drift_validation_accuracy",
            "scaleml_drift_window_rows",
        }
    ),
}

# kube-state-metrics (v2.10 or later), which no test here can run: the state of the objects ScaleML
# creates, as Kubernetes reports it. Names as its documentation gives them.
KUBE_STATE_METRICS: Final = frozenset(
    {
        # A ModelDeployment's Triton Deployment (NAME-triton): wanted and available replicas.
        "kube_deployment_spec_replicas",
        "kube_deployment_status_replicas_available",
        # Its HorizontalPodAutoscaler (NAME): bounds, current and desired replicas, metrics and targets.
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_horizontalpodautoscaler_spec_target_metric",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_status_target_metric",
        # A TrainingJob's Job (NAME): its failed worker pods.
        "kube_job_status_failed",
        # The GPUs that running training pods hold.
        "kube_pod_container_resource_requests",
        "kube_pod_status_phase",
    }
)

_TYPE: Final = re.compile(r"^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) (\w+)$")
_SAMPLE: Final = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]")
_SERIES_OF_TYPE: Final[Mapping[str, tuple[str, ...]]] = {
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exposed(text: str) -> frozenset[str]:
    """The series names a /metrics page (Prometheus text format) exports.

    A family is exported once declared, even before its first sample (a labelled counter that has
    not counted yet has only its `# TYPE` line); a histogram's series are its `_bucket`, `_sum` and
    `_count`.
    """
    names: set[str] = set()
    for line in text.splitlines():
        if declared := _TYPE.match(line):
            family, kind = declared.groups()
            names.update(family + suffix for suffix in _SERIES_OF_TYPE.get(kind, ("",)))
        elif sample := _SAMPLE.match(line):
            names.add(sample.group(1))
    return frozenset(names)
