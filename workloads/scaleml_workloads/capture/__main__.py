"""`python -m scaleml_workloads.capture`: the capture converter, a sidecar beside a ModelDeployment's Triton.

    python -m scaleml_workloads.capture --traces /traces --directory /captures/churn --format parquet

Triton traces a sample of its requests itself (one in every round(1/sampleRate), with their
input and output tensors) and writes each trace into a file of its own in --traces; clients call
Triton directly, and nothing here is on their path. This process turns the trace files into
rotated capture files in --directory, one row per batch row with the inputs and outputs (format:
scaleml_workloads.capture.files), and deletes the trace files it read. What it cannot capture (a
trace it cannot read, a full or read-only volume, a backlog past --max-backlog-mib) is counted on
the metrics port and never touches a request.

Captured requests are user data: files older than --max-age, then the oldest beyond
--max-bytes, are deleted (in --directory, and in --legacy-directory); request ids are kept only
with --request-ids.

SIGTERM (or SIGINT) converts what is left and writes the open capture file: in a pod the
converter stops after Triton, whose last traces it still reads.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, get_args

from prometheus_client import start_http_server
from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from scaleml_api.arguments import positive_float, positive_int
from scaleml_api.base import duration_seconds
from scaleml_api.runtime import CAPTURE_DIR, CAPTURE_METRICS_PORT, TRACE_DIR, TRACE_FILE
from scaleml_api.v1alpha1.modeldeployment import Capture, CaptureFormat, CaptureRetention
from scaleml_workloads.capture.converter import TraceConverter, TraceDirectory
from scaleml_workloads.capture.files import DEFAULT_MAX_FILE_BYTES, CaptureFiles
from scaleml_workloads.capture.retention import Retention

log = logging.getLogger("scaleml_workloads.capture")

MIB: Final = 1024 * 1024


def _retention_field(name: str) -> Callable[[str], str]:
    """A parser of one field of spec.capture.retention, checked as the API checks it."""

    def parse(text: str) -> str:
        try:
            value: str = getattr(CaptureRetention.model_validate({name: text}), to_snake(name))
        except ValidationError as error:
            raise argparse.ArgumentTypeError(f"{text}: {error.errors()[0]['msg']}") from None
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    defaults = Capture()
    parser = argparse.ArgumentParser(
        prog="python -m scaleml_workloads.capture",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    traces = parser.add_argument_group("Triton's trace files")
    traces.add_argument(
        "--traces",
        type=Path,
        default=Path(TRACE_DIR),
        metavar="DIR",
        help="where Triton writes its trace files (its --trace-config triton,file) (default: %(default)s)",
    )
    traces.add_argument(
        "--trace-file",
        default=TRACE_FILE,
        metavar="NAME",
        help="the name of Triton's trace file in that directory; it writes NAME.0, NAME.1, ... (default: %(default)s)",
    )
    traces.add_argument(
        "--max-trace-file-mib",
        type=positive_int,
        default=64,
        metavar="MIB",
        help="trace files larger than this are deleted unread, and counted (default: %(default)s)",
    )
    traces.add_argument(
        "--max-backlog-mib",
        type=positive_int,
        default=256,
        metavar="MIB",
        help="while the trace files take more than this, the oldest are deleted unread, and counted "
        "(default: %(default)s)",
    )
    capture = parser.add_argument_group("capture files")
    capture.add_argument(
        "--directory",
        type=Path,
        default=Path(CAPTURE_DIR),
        metavar="DIR",
        help="where capture files go: the ModelDeployment's own directory on the capture volume, made if need be "
        "(default: %(default)s)",
    )
    capture.add_argument(
        "--legacy-directory",
        type=Path,
        metavar="DIR",
        help="also apply the retention to the capture files in DIR, which nothing writes any more: the capture "
        "volume's root, where files went before each ModelDeployment had a directory of its own (default: none)",
    )
    capture.add_argument(
        "--format",
        choices=get_args(CaptureFormat),
        default=defaults.format,
        help="capture file format (default: %(default)s)",
    )
    # spec.capture.retention, field by field.
    for field, metavar, meaning in (
        ("maxAge", "DURATION", "capture files whose first row is older are deleted, e.g. 168h, 30m"),
        ("maxBytes", "SIZE", "past this size of the capture files together, the oldest are deleted, e.g. 10Gi, 500M"),
    ):
        capture.add_argument(
            f"--{to_snake(field).replace('_', '-')}",
            type=_retention_field(field),
            default=getattr(defaults.retention, to_snake(field)),
            metavar=metavar,
            help=f"{meaning} (default: %(default)s)",
        )
    capture.add_argument(
        "--request-ids",
        action="store_true",
        default=defaults.request_ids,
        help="write the requests' ids (at most 64 characters) into the captures; without it the column is empty",
    )
    capture.add_argument(
        "--skip-model",
        action="append",
        default=[],
        metavar="NAME",
        help="leave out the traced requests of this model (e.g. the explanation model); may be repeated",
    )
    capture.add_argument(
        "--rows-per-file",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="rows after which a file is completed; a request's batch is never split (default: %(default)s)",
    )
    capture.add_argument(
        "--seconds-per-file",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="age of its first row after which a file is completed (default: %(default)s)",
    )
    capture.add_argument(
        "--max-file-mib",
        type=positive_int,
        default=DEFAULT_MAX_FILE_BYTES // MIB,
        metavar="MIB",
        help="tensor data after which a file is completed; the open file waits in memory (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=CAPTURE_METRICS_PORT,
        metavar="PORT",
        help="Prometheus metrics at /metrics, on every interface; 0 turns them off (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    retention = CaptureRetention(max_age=args.max_age, max_bytes=args.max_bytes)
    converter = TraceConverter(
        TraceDirectory(args.traces, args.trace_file),
        CaptureFiles(args.directory, args.format, args.rows_per_file, args.seconds_per_file, args.max_file_mib * MIB),
        max_trace_file_bytes=args.max_trace_file_mib * MIB,
        max_backlog_bytes=args.max_backlog_mib * MIB,
        request_ids=args.request_ids,
        skip_models=frozenset(args.skip_model),
        retention=Retention(float(duration_seconds(retention.max_age)), retention.max_byte_count),
        legacy_directory=args.legacy_directory,
    )
    if args.metrics_port:
        start_http_server(args.metrics_port)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info(
        "converting Triton's traces in %s into %s captures in %s, kept for %s and up to %s%s",
        args.traces,
        args.format,
        args.directory,
        args.max_age,
        args.max_bytes,
        ", with request ids" if args.request_ids else "",
    )
    converter.run(stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
