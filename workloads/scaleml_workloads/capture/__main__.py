"""`python -m scaleml_workloads.capture`: the capture proxy, a sidecar in front of a ModelDeployment's Triton.

    python -m scaleml_workloads.capture --directory /captures --sample-rate 0.1 --format parquet

Clients call the proxy's ports (--http-port, --grpc-port) as they would call Triton: every
request goes to the local Triton server (--upstream-http, --upstream-grpc) and every answer comes
back exactly as Triton gave it. A --sample-rate fraction of the successful inferences is written
into rotated capture files in --directory, one row per batch row with the inputs and outputs
(format: scaleml_workloads.capture.files), from a background thread behind a bounded queue. A
full, read-only or slow volume drops samples and never fails a request: the drops are counted in
scaleml_capture_samples_dropped_total on the metrics port.

What it holds is bounded whatever clients send: HTTP bodies stream through (at most --max-body-mib
each, like Triton's own limit), a sample is taken only of bodies of at most --max-sample-mib (on the
wire and decompressed), gRPC messages are at most --max-grpc-message-mib each and
--max-grpc-inflight-mib together. Captured requests are user data: files older than --max-age,
then the oldest beyond --max-bytes, are deleted; request ids are kept only with --request-ids.

SIGTERM (or SIGINT) stops accepting connections, lets requests in flight finish, then writes the
open capture file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final, get_args

import uvloop
from prometheus_client import start_http_server
from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from scaleml_api.arguments import positive_float, positive_int
from scaleml_api.base import duration_seconds
from scaleml_api.runtime import (
    CAPTURE_DIR,
    CAPTURE_GRPC_PORT,
    CAPTURE_HTTP_PORT,
    CAPTURE_METRICS_PORT,
    EXIT_TIMEOUT_SECONDS,
    TRITON_GRPC_PORT,
    TRITON_HTTP_PORT,
)
from scaleml_api.v1alpha1.modeldeployment import Capture, CaptureFormat, CaptureRetention
from scaleml_workloads.capture.files import DEFAULT_MAX_FILE_BYTES, CaptureFiles
from scaleml_workloads.capture.kserve import Decoding
from scaleml_workloads.capture.limits import DEFAULT_LIMITS, Limits
from scaleml_workloads.capture.proxy import Proxy
from scaleml_workloads.capture.retention import Retention
from scaleml_workloads.capture.writer import DEFAULT_MAX_QUEUE_BYTES, CaptureWriter

log = logging.getLogger("scaleml_workloads.capture")

# Requests in flight get as long as Triton gives them after its own SIGTERM (--exit-timeout-secs).
_DRAIN_SECONDS: Final = float(EXIT_TIMEOUT_SECONDS)
# Then the last file; both fit in Kubernetes' default grace period of 30 s.
_FLUSH_SECONDS: Final = 5.0
MIB: Final = 1024 * 1024


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not within [0, 1]")
    return value


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
    upstream = parser.add_argument_group("Triton, where requests go")
    upstream.add_argument(
        "--upstream-http",
        default=f"127.0.0.1:{TRITON_HTTP_PORT}",
        metavar="HOST:PORT",
        help="Triton's HTTP endpoint (default: %(default)s)",
    )
    upstream.add_argument(
        "--upstream-grpc",
        default=f"127.0.0.1:{TRITON_GRPC_PORT}",
        metavar="HOST:PORT",
        help="Triton's gRPC endpoint (default: %(default)s)",
    )
    listen = parser.add_argument_group("where clients call, on every interface")
    for option, port, meaning in (
        ("--http-port", CAPTURE_HTTP_PORT, "KServe v2 over HTTP"),
        ("--grpc-port", CAPTURE_GRPC_PORT, "KServe v2 over gRPC"),
        ("--metrics-port", CAPTURE_METRICS_PORT, "Prometheus metrics at /metrics; 0 turns them off"),
    ):
        listen.add_argument(option, type=int, default=port, metavar="PORT", help=f"{meaning} (default: %(default)s)")
    capture = parser.add_argument_group("capture")
    capture.add_argument(
        "--directory",
        type=Path,
        default=Path(CAPTURE_DIR),
        metavar="DIR",
        help="where capture files go: the capture volume's mount (default: %(default)s)",
    )
    capture.add_argument(
        "--sample-rate",
        type=_fraction,
        default=defaults.sample_rate,
        metavar="RATE",
        help="fraction of the successful inferences captured, 0 for none, 1 for all (default: %(default)s)",
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
        "--max-queue",
        type=positive_int,
        default=1024,
        metavar="N",
        help="sampled inferences that may wait for the writer; more are dropped and counted (default: %(default)s)",
    )
    capture.add_argument(
        "--max-queue-mib",
        type=positive_int,
        default=DEFAULT_MAX_QUEUE_BYTES // MIB,
        metavar="MIB",
        help="size of the messages of the waiting inferences together; more are dropped and counted "
        "(default: %(default)s)",
    )
    capture.add_argument(
        "--max-file-mib",
        type=positive_int,
        default=DEFAULT_MAX_FILE_BYTES // MIB,
        metavar="MIB",
        help="tensor data after which a file is completed; the open file waits in memory (default: %(default)s)",
    )
    limits = parser.add_argument_group("bounds on what clients send")
    for option, default, meaning in (
        (
            "--max-body-mib",
            DEFAULT_LIMITS.max_body_bytes,
            "HTTP request bodies larger than this are refused with 413; they stream through the proxy, and "
            "Triton holds each whole",
        ),
        (
            "--max-sample-mib",
            DEFAULT_LIMITS.max_sample_bytes,
            "sampled inferences with a body larger than this, on the wire or decompressed, are forwarded but "
            "not captured (counted as dropped, reason too_large)",
        ),
        ("--max-grpc-message-mib", DEFAULT_LIMITS.max_grpc_message_bytes, "largest gRPC message, either way"),
        (
            "--max-grpc-inflight-mib",
            DEFAULT_LIMITS.max_grpc_inflight_bytes,
            "memory for the gRPC messages held at once, each counted three times its size; calls beyond wait",
        ),
    ):
        limits.add_argument(
            option, type=positive_int, default=default // MIB, metavar="MIB", help=f"{meaning} (default: %(default)s)"
        )
    capture.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the sampling decisions, for reproducible runs (default: a different one on every start)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    files = CaptureFiles(
        args.directory, args.format, args.rows_per_file, args.seconds_per_file, args.max_file_mib * MIB
    )
    retention = CaptureRetention(max_age=args.max_age, max_bytes=args.max_bytes)
    writer = CaptureWriter(
        files,
        args.sample_rate,
        args.max_queue,
        args.max_queue_mib * MIB,
        args.seed,
        decoding=Decoding(max_body_bytes=args.max_sample_mib * MIB, request_ids=args.request_ids),
        retention=Retention(float(duration_seconds(retention.max_age)), retention.max_byte_count),
    )
    if args.metrics_port:
        start_http_server(args.metrics_port)
    writer.start()
    # libuv's loop: on a small node the proxy shares the CPUs with Triton, and spends less of them.
    uvloop.run(_serve(args, writer))
    writer.close(_FLUSH_SECONDS)
    log.info("stopped")
    return 0


async def _serve(args: argparse.Namespace, writer: CaptureWriter) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    limits = Limits(
        max_body_bytes=args.max_body_mib * MIB,
        max_sample_bytes=args.max_sample_mib * MIB,
        max_grpc_message_bytes=args.max_grpc_message_mib * MIB,
        max_grpc_inflight_bytes=args.max_grpc_inflight_mib * MIB,
    )
    proxy = Proxy(args.upstream_http, args.upstream_grpc, writer, _DRAIN_SECONDS, limits)
    await proxy.start(args.http_port, args.grpc_port)
    log.info(
        "proxying HTTP :%d to %s and gRPC :%d to %s; capturing %g of the inferences into %s (%s), kept for %s "
        "and up to %s%s",
        args.http_port,
        args.upstream_http,
        args.grpc_port,
        args.upstream_grpc,
        args.sample_rate,
        args.directory,
        args.format,
        args.max_age,
        args.max_bytes,
        ", with request ids" if args.request_ids else "",
    )
    await stop.wait()
    log.info("stopping: no new connections, waiting up to %.0f s for requests in flight", _DRAIN_SECONDS)
    await proxy.stop()


if __name__ == "__main__":
    raise SystemExit(main())
