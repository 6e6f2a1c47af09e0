"""Prometheus metrics of the capture proxy, served by `--metrics-port` from the default registry.

A sample is one sampled inference (a request with its response); its rows are its batch.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

DROP_REASONS: Final = ("queue_full", "write_error", "undecodable", "too_large")
DELETE_REASONS: Final = ("max_age", "max_bytes")

REQUESTS: Final = Counter(
    "scaleml_capture_requests_total",
    "Requests proxied to Triton, by protocol (http, grpc) and the code answered: the HTTP status, or the gRPC "
    "status name (502 and UNAVAILABLE when Triton cannot be reached).",
    ["protocol", "code"],
)
SAMPLES_WRITTEN: Final = Counter(
    "scaleml_capture_samples_written_total",
    "Sampled inferences written into complete capture files.",
)
ROWS_WRITTEN: Final = Counter(
    "scaleml_capture_rows_written_total",
    "Rows (one per row of a sampled inference's batch) written into complete capture files.",
)
SAMPLES_DROPPED: Final = Counter(
    "scaleml_capture_samples_dropped_total",
    "Sampled inferences not written, by reason: queue_full (the writer fell behind, the volume is slow), "
    "write_error (the volume refused the file: full, read-only, no permission), undecodable (the request or "
    "the response could not be read as tensors), too_large (a body larger than the capture decodes, --max-sample-mib, "
    "on the wire or once decompressed; the request itself went to Triton untouched).",
    ["reason"],
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
PROXY_OVERHEAD: Final = Histogram(
    "scaleml_capture_proxy_overhead_seconds",
    "Time a request spends in the proxy outside its call to Triton, by protocol.",
    ["protocol"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)


def count_request(protocol: str, code: str, overhead_seconds: float) -> None:
    """Counts one proxied request by the code answered, and the time it spent in the proxy outside its call."""
    REQUESTS.labels(protocol, code).inc()
    PROXY_OVERHEAD.labels(protocol).observe(overhead_seconds)


# Every reason is exported from the start, so that a rate over it is defined before the first drop.
for _reason in DROP_REASONS:
    SAMPLES_DROPPED.labels(_reason)
for _reason in DELETE_REASONS:
    FILES_DELETED.labels(_reason)
