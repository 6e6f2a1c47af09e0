"""The capture converter: Triton's trace files in, capture files out, never in the way of a request.

Triton traces its sampled requests (`runtime.trace_options`), or a python-backend model writes the
same traces itself (`serving/torchscript_model.py`), into `<trace file>.<index>` in a directory of
the pod. The converter, a sidecar:

- reads each trace file once it has not changed for SETTLE_SECONDS (Triton writes one in a go),
  in the order Triton wrote them, turns its traces into samples (`traces`), hands them to the
  rotated capture files (`files.CaptureFiles`) and deletes it;
- keeps the trace directory bounded: a file larger than `max_trace_file_bytes` is deleted unread,
  and so are the oldest files while all of them take more than `max_backlog_bytes` (the converter
  fell behind); both are counted;
- applies the retention to the captures directory, when it starts and every RETENTION_SECONDS, and
  to the capture files of the layout before each ModelDeployment had a directory of its own, left
  at the claim's root (`legacy_directory`): nothing writes there any more, and what is left goes
  by the rule it was written under, every converter of the claim sweeping it.

Nothing here is on the path of a request: Triton answers whether the converter runs or not, and a
trace file Triton cannot write (a full volume) costs Triton a log line. What the converter loses
is counted (`metrics`) and logged, at once for each kind of failure and then at most once a minute.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from scaleml_workloads.capture import metrics
from scaleml_workloads.capture.files import CaptureFiles, Flushed
from scaleml_workloads.capture.retention import Retention, sweep
from scaleml_workloads.capture.traces import read_trace_file

log = logging.getLogger(__name__)

# A trace file unchanged for this long is complete: Triton writes each in one go, in milliseconds.
SETTLE_SECONDS: Final = 0.5
# How often the retention is applied: files are deleted within this long of being due.
RETENTION_SECONDS: Final = 30.0
_POLL_SECONDS: Final = 0.5
_REPORT_INTERVAL_SECONDS: Final = 60.0


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


@dataclass(frozen=True)
class TraceDirectory:
    """Where Triton writes its traces: `directory/<name>.<index>` (and `<name>` itself when it exits)."""

    directory: Path
    name: str

    def files(self) -> list[os.DirEntry[str]]:
        """The trace files, in the order Triton wrote them."""
        pattern = re.compile(re.escape(self.name) + r"(?:\.(\d+))?")
        found: list[tuple[float, os.DirEntry[str]]] = []
        with os.scandir(self.directory) as entries:
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match is not None and entry.is_file(follow_symlinks=False):
                    # The file without an index is the last, written when Triton stopped.
                    found.append((int(match[1]) if match[1] is not None else float("inf"), entry))
        return [entry for _, entry in sorted(found, key=lambda item: item[0])]


# What a python-backend model that writes its own traces has lost, per process: {"queue_full": n, "write_error": n}.
MODEL_COUNTS_GLOB: Final = ".model-*.json"
_MODEL_REASONS: Final = {"queue_full": "queue_full", "write_error": "trace_write_error"}


class TraceConverter:
    """Turns the trace files in `traces` into capture files through `files`; `run` until `stop` is set.

    Request ids are written only with `request_ids`; `retention`, when given, is applied to the
    captures directory and to `legacy_directory`. Samples of the `skip_models` are left out.
    """

    def __init__(
        self,
        traces: TraceDirectory,
        files: CaptureFiles,
        max_trace_file_bytes: int,
        max_backlog_bytes: int,
        request_ids: bool = False,
        retention: Retention | None = None,
        skip_models: frozenset[str] = frozenset(),
        legacy_directory: Path | None = None,
    ) -> None:
        self.traces = traces
        self.files = files
        self.max_trace_file_bytes = max_trace_file_bytes
        self.max_backlog_bytes = max_backlog_bytes
        self.request_ids = request_ids
        self.retention = retention
        # Models Triton traces that are not the served one: the explanation model, whose outputs are
        # attributions and whose requests a drift monitor must not count as traffic.
        self.skip_models = skip_models
        self.swept = (files.directory, *([legacy_directory] if legacy_directory is not None else []))
        self._log = _ThrottledLog()
        self._model_counts: dict[str, dict[str, int]] = {}

    def run(self, stop: threading.Event) -> None:
        """Converts until `stop` is set, then what is left (Triton has stopped by then), and writes the open file."""
        self.files.remove_stale_temporaries()
        next_sweep = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_sweep:
                self.sweep()
                next_sweep = now + RETENTION_SECONDS
            self.convert()
            stop.wait(_POLL_SECONDS)
        self.convert(final=True)
        self._account(self.files.flush())
        self.sweep()

    def convert(self, final: bool = False) -> None:
        """Converts every settled trace file (every one, when `final`), then writes the capture file if it is due."""
        try:
            listed = self.traces.files()
        except OSError as error:
            self._log.warning("trace-directory", f"cannot list the trace files in {self.traces.directory}: {error}")
            return
        files: list[tuple[Path, os.stat_result]] = []
        for entry in listed:
            try:
                files.append((Path(entry.path), entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
            except OSError as error:
                self._log.warning("trace-file", f"cannot read {entry.path}: {error}")
        now = time.time()
        for path, status in self._bound_backlog(files):
            if not final and now - status.st_mtime < SETTLE_SECONDS:
                # Triton may still be writing it, and writes the later ones after it.
                break
            self._convert_file(path, status.st_size)
        self._count_model_losses()
        self._account(self.files.rotate_if_due())

    def _count_model_losses(self) -> None:
        """Adds what python-backend models lost since the last look to the drop counts (their counts only grow)."""
        for path in self.traces.directory.glob(MODEL_COUNTS_GLOB):
            try:
                counts = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            seen = self._model_counts.setdefault(path.name, {})
            for key, reason in _MODEL_REASONS.items():
                value = counts.get(key, 0) if isinstance(counts, dict) else 0
                if isinstance(value, int) and value > seen.get(key, 0):
                    metrics.SAMPLES_DROPPED.labels(reason).inc(value - seen.get(key, 0))
                    self._log.warning(reason, f"the model lost {value} sampled requests ({reason}), by {path.name}")
                    seen[key] = value

    def sweep(self) -> None:
        if self.retention is None:
            return
        for directory in self.swept:
            swept = sweep(directory, self.retention)
            metrics.FILES_DELETED.labels("max_age").inc(swept.by_age)
            metrics.FILES_DELETED.labels("max_bytes").inc(swept.by_size)
            if swept.by_age or swept.by_size:
                log.info(
                    "retention: deleted %d capture files older than the maximum age and %d beyond the maximum size "
                    "in %s; %d bytes kept",
                    swept.by_age,
                    swept.by_size,
                    directory,
                    swept.kept_bytes,
                )
            for error in swept.errors:
                self._log.warning("retention", f"cannot apply the capture retention in {directory}: {error}")

    def _bound_backlog(self, files: list[tuple[Path, os.stat_result]]) -> list[tuple[Path, os.stat_result]]:
        """Deletes the oldest trace files, unread, while all of them take more than `max_backlog_bytes`."""
        total = sum(status.st_size for _, status in files)
        kept = 0
        while kept < len(files) and total > self.max_backlog_bytes:
            path, status = files[kept]
            self._drop(path, "backlog", f"the trace files take more than {self.max_backlog_bytes} bytes")
            total -= status.st_size
            kept += 1
        return files[kept:]

    def _convert_file(self, path: Path, size: int) -> None:
        if size > self.max_trace_file_bytes:
            self._drop(path, "too_large", f"{size} bytes, more than the {self.max_trace_file_bytes} bytes read")
            return
        try:
            data = path.read_bytes()
        except OSError as error:
            self._drop(path, "unreadable", str(error))
            return
        offset = time.time_ns() - time.monotonic_ns()
        try:
            read = read_trace_file(data, lambda ns: (ns + offset) / 1e9, self.request_ids, read_at=time.time())
        # Whatever a trace file holds, it costs its own samples and never the converter.
        except Exception as error:
            self._drop(path, "unreadable", f"{type(error).__name__}: {error}")
            return
        self._remove(path)
        if not read.complete:
            self._log.warning("incomplete", f"{path} was cut off (Triton stopped while writing it): read what it held")
        if read.unreadable:
            metrics.SAMPLES_DROPPED.labels("undecodable").inc(len(read.unreadable))
            trace_id, why = next(iter(read.unreadable.items()))
            self._log.warning(
                "undecodable",
                f"{len(read.unreadable)} traces in {path.name} cannot be captured; trace {trace_id}: {why}",
            )
        for datatype, count in read.untraced.items():
            metrics.TENSORS_UNTRACED.labels(datatype).inc(count)
            self._log.warning(
                f"untraced-{datatype}", f"{datatype} tensors are not in Triton's traces: left out of {count} samples"
            )
        for sample in read.samples:
            if sample.model not in self.skip_models:
                self._account(self.files.add(sample))

    def _drop(self, path: Path, reason: str, why: str) -> None:
        metrics.TRACE_FILES_DROPPED.labels(reason).inc()
        self._log.warning(reason, f"not converting the trace file {path}: {why}")
        self._remove(path)

    def _remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            self._log.warning("remove", f"cannot remove the trace file {path}: {error}")

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
