"""The capture writer: samples inferences, then decodes and writes them into capture files from its own thread.

The proxy draws the sampling decision (`sampled`) and hands a sampled exchange to `put`, which
puts it on a bounded queue without waiting (`offer` does both): a full queue (the writer fell
behind, the volume is slow) drops the sample and counts it, and so does a body larger than the
capture decodes (`Decoding.max_body_bytes`), here or once decompressed. Decoding, encoding and the
volume are the thread's business. A file the volume refuses costs its samples, which are counted
and logged (at once for each kind of error, then at most once a minute), and the next file is
tried afresh. The thread also applies the retention to the directory, when it starts and every
RETENTION_SECONDS.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import random
import threading
import time
from collections import Counter
from typing import Final

from scaleml_workloads.capture import metrics
from scaleml_workloads.capture.files import CaptureFiles, Flushed
from scaleml_workloads.capture.kserve import DEFAULT_DECODING, Decoding, Exchange, TooLargeError
from scaleml_workloads.capture.retention import Retention, sweep

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE_BYTES: Final = 64 * 1024 * 1024
_REPORT_INTERVAL_SECONDS: Final = 60.0
# How often an idle writer looks whether its open file is due for rotation.
_MAX_TICK_SECONDS: Final = 1.0
# How often the retention is applied: files are deleted within this long of being due.
RETENTION_SECONDS: Final = 30.0


class _ThrottledLog:
    """Warns of each kind of failure at once, then at most once per interval, with how many were not reported."""

    def __init__(self, interval: float = _REPORT_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._unreported: Counter[str] = Counter()

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._unreported[kind] += 1
            return
        self._last[kind] = now
        unreported = self._unreported.pop(kind, 0)
        log.warning("%s%s", message, f" ({unreported} more since the last report)" if unreported else "")


class CaptureWriter:
    """Samples at `sample_rate` (0: never, 1: always) with a `random.Random(seed)`, and writes through `files`.

    At most `max_queue` sampled inferences, of at most `max_queue_bytes` of messages together, wait
    for the thread: a sidecar that grew without bound would be killed, and take the pod's traffic with it.
    `decoding` bounds what one sample may decode to and says whether request ids are kept;
    `retention`, when given, is applied to the files' directory.
    """

    def __init__(
        self,
        files: CaptureFiles,
        sample_rate: float,
        max_queue: int,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        seed: int | None = None,
        decoding: Decoding = DEFAULT_DECODING,
        retention: Retention | None = None,
    ) -> None:
        self.files = files
        self.sample_rate = sample_rate
        self.max_queue_bytes = max_queue_bytes
        self.decoding = decoding
        self.retention = retention
        self._random = random.Random(seed)
        # None tells the thread to flush and stop.
        self._queue: queue.Queue[Exchange | None] = queue.Queue(maxsize=max_queue)
        self._queued_bytes = 0
        self._queued_bytes_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._log = _ThrottledLog()

    def start(self) -> None:
        self._thread.start()

    def sampled(self) -> bool:
        """Draws the sampling decision of one successful inference."""
        return self._random.random() < self.sample_rate

    def offer(self, exchange: Exchange) -> None:
        """Queues a successful inference for writing if it is sampled; never waits, never raises."""
        if self.sampled():
            self.put(exchange)

    def put(self, exchange: Exchange) -> None:
        """Queues a sampled inference for writing; never waits, never raises."""
        if exchange.largest > self.decoding.max_body_bytes:
            self.drop("too_large", f"a body of {exchange.largest} bytes")
            return
        with self._queued_bytes_lock:
            # Only the proxy's event loop puts (and `close`, after it), so a queue not full now takes the exchange.
            if not self._queue.full() and self._queued_bytes + exchange.nbytes <= self.max_queue_bytes:
                self._queue.put_nowait(exchange)
                self._queued_bytes += exchange.nbytes
                return
        self.drop(
            "queue_full", f"the capture queue is full ({self._queue.maxsize} samples or {self.max_queue_bytes} bytes)"
        )

    def drop(self, reason: str, why: str) -> None:
        """Counts a sampled inference that is not captured (`reason`: one of metrics.DROP_REASONS), and says `why`."""
        metrics.SAMPLES_DROPPED.labels(reason).inc()
        if reason == "too_large":
            why += f", more than the capture decodes ({self.decoding.max_body_bytes} bytes); the request went to Triton"
        self._log.warning(reason, f"not capturing a sample: {why}")

    def close(self, timeout: float) -> None:
        """Writes what is queued and the open file, waiting at most `timeout` s: a hung volume must not hold the pod."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("the capture writer did not finish within %.0f s; the open capture file is lost", timeout)

    def _run(self) -> None:
        self.files.remove_stale_temporaries()
        tick = min(_MAX_TICK_SECONDS, self.files.seconds_per_file / 2)
        next_sweep = time.monotonic()
        while True:
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + RETENTION_SECONDS
            try:
                exchange = self._queue.get(timeout=tick)
            except queue.Empty:
                self._account(self.files.rotate_if_due())
                continue
            if exchange is None:
                break
            with self._queued_bytes_lock:
                self._queued_bytes -= exchange.nbytes
            self._write(exchange)
            self._account(self.files.rotate_if_due())
        self._account(self.files.flush())
        self._sweep()

    def _sweep(self) -> None:
        if self.retention is None:
            return
        swept = sweep(self.files.directory, self.retention)
        metrics.FILES_DELETED.labels("max_age").inc(swept.by_age)
        metrics.FILES_DELETED.labels("max_bytes").inc(swept.by_size)
        if swept.by_age or swept.by_size:
            log.info(
                "retention: deleted %d capture files older than the maximum age and %d beyond the maximum size; "
                "%d bytes kept",
                swept.by_age,
                swept.by_size,
                swept.kept_bytes,
            )
        for error in swept.errors:
            self._log.warning("retention", f"cannot apply the capture retention in {self.files.directory}: {error}")

    def _write(self, exchange: Exchange) -> None:
        try:
            sample = exchange.decode(self.decoding)
        except TooLargeError as error:
            self.drop("too_large", str(error))
            return
        # Whatever a request holds, it costs its own sample and never the writer.
        except Exception as error:
            metrics.SAMPLES_DROPPED.labels("undecodable").inc()
            self._log.warning("undecodable", f"skipping a sample that cannot be captured: {error}")
            return
        self._account(self.files.add(sample))

    def _account(self, flushed: list[Flushed]) -> None:
        for outcome in flushed:
            if outcome.error is None:
                metrics.FILES_WRITTEN.inc()
                metrics.SAMPLES_WRITTEN.inc(outcome.samples)
                metrics.ROWS_WRITTEN.inc(outcome.rows)
                continue
            metrics.SAMPLES_DROPPED.labels("write_error").inc(outcome.samples)
            error = outcome.error
            kind = errno.errorcode.get(error.errno or 0, "") if isinstance(error, OSError) else ""
            kind = kind or type(error).__name__
            self._log.warning(
                kind,
                f"cannot write {outcome.rows} captured rows ({outcome.samples} samples) to {self.files.directory}: "
                f"{error}",
            )
