"""Writing capture files: samples gathered into rotated Parquet or NPZ files, each renamed into place once complete."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from scaleml_api.v1alpha1.modeldeployment import CaptureFormat
from scaleml_workloads.capture.files.layout import (
    BYTES,
    DATATYPES,
    METADATA_KEY,
    MODEL,
    MODEL_VERSION,
    REQUEST_ID,
    STRING_COLUMNS,
    TIMESTAMP,
    Array,
    Sample,
    metadata_json,
)
from scaleml_workloads.capture.files.names import file_name, temporary_writer, this_instance

log = logging.getLogger(__name__)

# The open file's rows wait in memory, and encoding them takes about twice as much again.
DEFAULT_MAX_FILE_BYTES: Final = 32 * 1024 * 1024
# Owner and group read (the group is the pods' fsGroup), owner writes, others nothing.
FILE_MODE: Final = 0o640
# The directory of a ModelDeployment's files: the group (the monitors' pods) lists it too.
DIRECTORY_MODE: Final = 0o750


@dataclass(frozen=True)
class Flushed:
    """What became of the samples of one file: written to `path`, or lost to `error`."""

    samples: int
    rows: int
    path: Path | None = None
    error: Exception | None = None


class CaptureFiles:
    """Turns samples into rotated capture files in one directory; every method returns what it flushed.

    The directory is made with the first file, if need be. Writing never raises: a file that cannot
    be written (volume full, read-only, gone) is reported in its `Flushed.error`, its samples are
    lost, and the next file is tried afresh.
    """

    def __init__(
        self,
        directory: Path,
        format: CaptureFormat,
        rows_per_file: int,
        seconds_per_file: float,
        max_bytes: int = DEFAULT_MAX_FILE_BYTES,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.format: CaptureFormat = format
        self.rows_per_file = rows_per_file
        self.seconds_per_file = seconds_per_file
        self.max_bytes = max_bytes
        self.instance = instance or this_instance()
        self._clock = clock
        self._samples: list[Sample] = []
        self._rows = 0
        self._size = _Size()
        self._opened = 0.0
        self._sequence = 0

    def remove_stale_temporaries(self) -> None:
        """Removes the hidden files an earlier process of this pod left when it died mid-write."""
        try:
            for entry in os.scandir(self.directory):
                if temporary_writer(entry.name) == self.instance:
                    os.unlink(entry.path)
                    log.info("removed %s, left by an interrupted writer", entry.path)
        except FileNotFoundError:
            return  # no file written yet
        except OSError as error:
            log.warning("cannot clean up %s: %s", self.directory, error)

    def add(self, sample: Sample) -> list[Flushed]:
        flushed: list[Flushed] = []
        alone = _Size.of(sample, self.format)
        if alone.total > self.max_bytes and alone.total > alone.stored:
            # One element of a BYTES tensor widens every element of the file to its length: a client's
            # request of a few hundred KiB would take a GiB as it is written, and the converter with it.
            why = f"its BYTES elements take {alone.total} bytes at the width of the longest, more than {self.max_bytes}"
            return [Flushed(1, sample.rows, error=ValueError(f"not written in an npz file: {why}"))]
        if self._samples and (
            sample.layout != self._samples[0].layout
            or self._rows + sample.rows > self.rows_per_file
            or (self._size + alone).total > self.max_bytes
        ):
            flushed += self.flush()
        if not self._samples:
            self._opened = self._clock()
        self._samples.append(sample)
        self._rows += sample.rows
        self._size += alone
        if self._rows >= self.rows_per_file or self._size.total >= self.max_bytes:
            flushed += self.flush()
        return flushed

    def rotate_if_due(self) -> list[Flushed]:
        """Flushes the open file once its first row is `seconds_per_file` old."""
        if self._samples and self._clock() - self._opened >= self.seconds_per_file:
            return self.flush()
        return []

    def flush(self) -> list[Flushed]:
        """Writes the open file, if it has rows."""
        if not self._samples:
            return []
        samples, rows = self._samples, self._rows
        self._samples, self._rows, self._size = [], 0, _Size()
        self._sequence += 1
        name = file_name(samples[0].timestamp, self.instance, self._sequence, self.format)
        try:
            _make_directory(self.directory)
            path = _write_atomically(self.directory / name, _WRITERS[self.format], samples)
        # The volume, or encoding these rows: whatever fails costs this file's samples, not the writer.
        except Exception as error:
            return [Flushed(len(samples), rows, error=error)]
        return [Flushed(len(samples), rows, path=path)]


@dataclass(frozen=True)
class _Size:
    """What an open file's samples take as the file is written: `stored`, their data (BYTES: the
    elements' lengths); `total`, that with an npz file's BYTES elements each at the width of the longest."""

    stored: int = 0
    elements: int = 0
    lengths: int = 0
    widest: int = 0

    @classmethod
    def of(cls, sample: Sample, format: CaptureFormat) -> _Size:
        lengths = [len(e) for t in sample.inputs + sample.outputs if t.datatype == BYTES for e in t.array.flat]
        if format != "npz" or not lengths:
            return cls(sample.nbytes)
        return cls(sample.nbytes, len(lengths), sum(lengths), max(lengths))

    def __add__(self, other: _Size) -> _Size:
        return _Size(
            self.stored + other.stored,
            self.elements + other.elements,
            self.lengths + other.lengths,
            max(self.widest, other.widest),
        )

    @property
    def total(self) -> int:
        return self.stored - self.lengths + self.elements * self.widest


def _make_directory(directory: Path) -> None:
    """Makes `directory` with DIRECTORY_MODE whatever the umask, unless it exists; never its parent, the volume."""
    try:
        directory.mkdir(mode=DIRECTORY_MODE)
    except FileExistsError:
        return
    # The setgid bit a volume with an fsGroup gives its directories stays: files made inside keep that group.
    os.chmod(directory, DIRECTORY_MODE | (directory.stat().st_mode & stat.S_ISGID))


def _write_atomically(path: Path, write: Callable[[IO[bytes], list[Sample]], None], samples: list[Sample]) -> Path:
    temporary = path.with_name(f".{path.name}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        # The umask may have taken bits away (or a stale temporary kept its own): the mode is set as such.
        with os.fdopen(descriptor, "wb") as sink:
            os.fchmod(sink.fileno(), FILE_MODE)
            write(sink, samples)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        # A half-written file on a full volume would keep its space forever.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    return path


def _columns(samples: Sequence[Sample]) -> dict[str, Array]:
    """The file's columns as arrays of `rows` rows, tensors shaped (rows, *shape)."""
    rows = [sample.rows for sample in samples]
    columns: dict[str, Array] = {
        TIMESTAMP: np.repeat(np.array([sample.timestamp for sample in samples], dtype=np.float64), rows),
        MODEL: np.repeat(np.array([sample.model for sample in samples], dtype=str), rows),
        MODEL_VERSION: np.repeat(np.array([sample.model_version for sample in samples], dtype=str), rows),
        REQUEST_ID: np.repeat(np.array([sample.request_id for sample in samples], dtype=str), rows),
    }
    for spec in samples[0].layout:
        parts = [sample.array(spec.name) for sample in samples]
        columns[spec.name] = np.concatenate(parts).astype(DATATYPES[spec.datatype], copy=False)
    return columns


def _write_parquet(sink: IO[bytes], samples: list[Sample]) -> None:
    layout = samples[0].layout
    columns = _columns(samples)
    arrays = [
        pa.array(columns[TIMESTAMP], type=pa.float64()),
        *(pa.array(columns[name], type=pa.string()) for name in STRING_COLUMNS),
    ]
    for spec in layout:
        flat = columns[spec.name].reshape(-1)
        values = pa.array(flat, type=pa.binary()) if spec.datatype == BYTES else pa.array(flat)
        arrays.append(pa.FixedSizeListArray.from_arrays(values, math.prod(spec.shape)))
    names = [TIMESTAMP, *STRING_COLUMNS, *(spec.name for spec in layout)]
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata({METADATA_KEY: metadata_json(layout)})
    # No dictionary for BYTES tensors: their decoded size is then bounded by what the file stores,
    # which the reader checks before it reads them (it skips BYTES columns with a dictionary).
    dictionary = [*STRING_COLUMNS, *(_leaf(spec.name) for spec in layout if spec.datatype != BYTES)]
    pq.write_table(table, sink, use_dictionary=dictionary)


def _leaf(name: str) -> str:
    """The Parquet column path of the values of the tensor column `name` (a list column)."""
    return f"{name}.list.element"


def _write_npz(sink: IO[bytes], samples: list[Sample]) -> None:
    layout = samples[0].layout
    columns = _columns(samples)
    for spec in layout:
        if spec.datatype == BYTES:
            # Object arrays would need pickle to load; fixed-width byte strings do not.
            columns[spec.name] = columns[spec.name].astype(np.bytes_)
    np.savez_compressed(sink, **columns, **{METADATA_KEY: np.array(metadata_json(layout))})


_WRITERS: Final[dict[CaptureFormat, Callable[[IO[bytes], list[Sample]], None]]] = {
    "parquet": _write_parquet,
    "npz": _write_npz,
}
