"""Prometheus metrics of the capture converter, served by `--metrics-port` from the default registry.

A sample is one traced inference (a request with its response); its rows are its batch. What
Triton served is in Triton's own metrics (nv_inference_request_success and the rest).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

DROP_REASONS: Final = ("write_error", "undecodable", "queue_full", "trace_write_error")
TRACE_FILE_DROP_REASONS: Final = ("too_large", "backlog", "unreadable")
DELETE_REASONS: Final = ("max_age", "max_bytes")
UNTRACED_DATATYPES: Final = ("FP16", "BF16")

SAMPLES_WRITTEN: Final = Counter(
    "scaleml_capture_samples_written_total",
    "Traced inferences written into complete capture files.",
)
ROWS_WRITTEN: Final = Counter(
    "scaleml_capture_rows_written_total",
    "Rows (one per row of a traced inference's batch) written into complete capture files.",
)
SAMPLES_DROPPED: Final = Counter(
    "scaleml_capture_samples_dropped_total",
    "Sampled inferences not written, by reason: write_error (the volume refused the capture file: full, "
    "read-only, no permission), undecodable (the trace could not be read as tensors: malformed, cut off, or a "
    "layout a capture file cannot hold); and, counted by a python-backend model that writes its own traces, "
    "queue_full (its writer thread fell behind) and trace_write_error (the trace volume refused the file).",
    ["reason"],
)
TRACE_FILES_DROPPED: Final = Counter(
    "scaleml_capture_trace_files_dropped_total",
    "Triton trace files deleted unread, with every inference in them, by reason: too_large (larger than the "
    "converter reads, --max-trace-file-mib), backlog (the trace files took more than --max-backlog-mib: the "
    "converter fell behind), unreadable (the file could not be read).",
    ["reason"],
)
TENSORS_UNTRACED: Final = Counter(
    "scaleml_capture_tensors_untraced_total",
    "Tensors left out of captured inferences because Triton's traces carry no data of their datatype (FP16, BF16).",
    ["datatype"],
)
FILES_DELETED: Final = Counter(
    "scaleml_capture_files_deleted_total",
    "Capture files deleted by the retention (spec.capture.retention), by reason: max_age, max_bytes.",
    ["reason"],
)
FILES_WRITTEN: Final = Counter(
    "scaleml_capture_files_written_total",
    "Capture files completed (renamed into place).",
)

# Every label value is exported from the start, so that a rate over it is defined before the first event.
for _reason in DROP_REASONS:
    SAMPLES_DROPPED.labels(_reason)
for _reason in TRACE_FILE_DROP_REASONS:
    TRACE_FILES_DROPPED.labels(_reason)
for _reason in DELETE_REASONS:
    FILES_DELETED.labels(_reason)
for _datatype in UNTRACED_DATATYPES:
    TENSORS_UNTRACED.labels(_datatype)
