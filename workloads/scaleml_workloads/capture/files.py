"""Capture files: what the capture proxy writes and the drift monitor reads.

A captures directory (the volume of a ModelDeployment's `spec.capture`) holds complete files named

    captures-<UTC time of the first row>-<instance>-<sequence>.<parquet|npz>
    e.g. captures-20250101T120000.123456Z-churn-7d9f8c-x2x4q-000003.parquet

so that names sort by time; <instance> is the writer's pod ($POD_NAME, else the host name),
<sequence> counts the files of one writer process from 000001. A file is written under its name
with a leading dot, synced, and renamed into place once complete: readers ignore hidden files, and
a writer that starts removes the hidden files its pod left behind. Files are created with mode
0640 whatever the umask: captured requests are user data, for the pods' group (the fsGroup of
the serving and monitor pods) and nobody else. `retention` deletes them again.

One row per row of a captured request's batch (the first dimension of its tensors), in the order
the requests were sampled:

    column           Parquet type                         meaning
    timestamp        double                               when the proxy received the request, epoch seconds
    model            string                               the model that answered
    model_version    string                               its version
    request_id       string                               the request's `id`, empty unless the capture
                                                          keeps ids (spec.capture.requestIds)
    <tensor name>    fixed_size_list<T>[prod(shape)]      one column per input and per output tensor
                                                          (inputs first, each sorted by name), named after
                                                          it (INPUT__0, OUTPUT__0, ...): the row's values,
                                                          flattened in C order

T follows the KServe datatype: bool, int8...int64, uint8...uint64, halffloat (FP16), float (FP32),
double (FP64), binary (BYTES). The schema's key-value metadata `scaleml.capture` describes the
tensors as JSON, `shape` being the shape of one row:

    {"version": 1, "tensors": [{"name": "INPUT__0", "role": "input", "datatype": "FP32", "shape": [5]},
                               {"name": "OUTPUT__0", "role": "output", "datatype": "FP32", "shape": [2]}]}

NPZ files (compressed) hold the same columns as arrays of the same names: `timestamp` float64,
the three strings as unicode arrays, each tensor shaped (rows, *shape); BYTES tensors as
fixed-width byte strings (NumPy drops their trailing NUL bytes), and the metadata JSON as the 0-d
string array `scaleml.capture`.

All rows of a file share one layout (tensor names, datatypes, row shapes): the writer starts a new
file when the layout changes, when the file holds `rows_per_file` rows or `max_bytes` of tensor
data (a request's batch is never split, so one larger batch makes a larger file), or when its
first row is `seconds_per_file` old.

`read_captures` returns the newest rows of a directory as NumPy arrays by column name, and
`read_window` the same with what it skipped: it reads at most `max_bytes` of columns, checked
against each file's metadata before its data is read, and skips (and names) any file it cannot
read, whatever it holds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re
import socket
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from scaleml_api.v1alpha1.modeldeployment import CaptureFormat

log = logging.getLogger(__name__)

Role = Literal["input", "output"]
Array = npt.NDArray[Any]

TIMESTAMP: Final = "timestamp"
MODEL: Final = "model"
MODEL_VERSION: Final = "model_version"
REQUEST_ID: Final = "request_id"
METADATA_KEY: Final = "scaleml.capture"
METADATA_VERSION: Final = 1
_STRING_COLUMNS: Final = (MODEL, MODEL_VERSION, REQUEST_ID)
RESERVED_NAMES: Final = frozenset({TIMESTAMP, *_STRING_COLUMNS, METADATA_KEY})

# Set by the operator from the downward API: pods sharing a volume write under their own names.
INSTANCE_ENV: Final = "POD_NAME"
# The open file's rows wait in memory, and encoding them takes about twice as much again.
DEFAULT_MAX_FILE_BYTES: Final = 32 * 1024 * 1024
PREFIX: Final = "captures-"
SUFFIXES: Final[dict[CaptureFormat, str]] = {"parquet": ".parquet", "npz": ".npz"}
_TIME_FORMAT: Final = "%Y%m%dT%H%M%S.%fZ"
_NAME: Final = re.compile(r"captures-(?P<time>\d{8}T\d{6}\.\d{6}Z)-(?P<instance>.+)-\d{6}\.(parquet|npz)")
# Owner and group read (the group is the pods' fsGroup), owner writes, others nothing.
FILE_MODE: Final = 0o640

# The KServe v2 datatypes a capture file can hold, and their NumPy types (BYTES: Python bytes).
DATATYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
BYTES: Final = "BYTES"


@dataclass(frozen=True, eq=False)
class Tensor:
    """A tensor of a request or a response; the first dimension of `array` is the batch."""

    name: str
    datatype: str
    array: Array


@dataclass(frozen=True)
class TensorSpec:
    """A tensor column: what the file metadata records of it."""

    name: str
    role: Role
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, eq=False)
class Sample:
    """One captured inference, whose rows are the first dimension of every tensor.

    Raises ValueError when it cannot become rows of a file: no tensor, a tensor without a batch
    dimension or with empty rows, batch sizes that disagree, a datatype outside DATATYPES, or a
    name used twice or taken by a column of the file.
    """

    timestamp: float
    model: str
    model_version: str
    request_id: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        tensors = self.inputs + self.outputs
        if not tensors:
            raise ValueError("no tensors")
        names = [tensor.name for tensor in tensors]
        if len(set(names)) != len(names) or RESERVED_NAMES & set(names):
            raise ValueError(f"tensor names {names} repeat or take one of the columns {sorted(RESERVED_NAMES)}")
        for tensor in tensors:
            if tensor.datatype not in DATATYPES:
                raise ValueError(f"{tensor.name}: datatype {tensor.datatype} cannot be captured")
            if tensor.array.ndim == 0 or math.prod(tensor.array.shape[1:]) == 0:
                raise ValueError(f"{tensor.name}: shape {list(tensor.array.shape)} has no batch of non-empty rows")
        batch_sizes = {tensor.array.shape[0] for tensor in tensors}
        if len(batch_sizes) != 1 or 0 in batch_sizes:
            raise ValueError(f"batch sizes {sorted(batch_sizes)} disagree or are empty")
        object.__setattr__(self, "rows", batch_sizes.pop())

    @functools.cached_property
    def layout(self) -> tuple[TensorSpec, ...]:
        """The tensor columns, inputs then outputs, each by name: clients may list tensors in any order."""
        roles: tuple[tuple[Role, tuple[Tensor, ...]], ...] = (("input", self.inputs), ("output", self.outputs))
        specs = (
            TensorSpec(tensor.name, role, tensor.datatype, tuple(tensor.array.shape[1:]))
            for role, tensors in roles
            for tensor in tensors
        )
        return tuple(sorted(specs, key=lambda spec: (spec.role, spec.name)))

    @functools.cached_property
    def nbytes(self) -> int:
        """The tensor data it holds (BYTES: the elements' lengths)."""
        return sum(
            sum(len(element) for element in tensor.array.flat) if tensor.datatype == BYTES else tensor.array.nbytes
            for tensor in self.inputs + self.outputs
        )

    def array(self, name: str) -> Array:
        return next(tensor.array for tensor in self.inputs + self.outputs if tensor.name == name)


@dataclass(frozen=True)
class Flushed:
    """What became of the samples of one file: written to `path`, or lost to `error`."""

    samples: int
    rows: int
    path: Path | None = None
    error: Exception | None = None


def file_name(first_timestamp: float, instance: str, sequence: int, format: CaptureFormat) -> str:
    moment = datetime.fromtimestamp(first_timestamp, tz=UTC).strftime(_TIME_FORMAT)
    return f"{PREFIX}{moment}-{instance}-{sequence:06d}{SUFFIXES[format]}"


def this_instance() -> str:
    """The pod's name ($POD_NAME, else the host name), made safe for a file name."""
    name = os.environ.get(INSTANCE_ENV) or socket.gethostname()
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "unknown"


def first_row_time(name: str) -> float | None:
    """The epoch time of the first row of a capture file (hidden or not), from its name; None for other names."""
    match = _NAME.fullmatch(name.removeprefix("."))
    if match is None:
        return None
    return datetime.strptime(match["time"], _TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def capture_files(directory: Path) -> list[Path]:
    """The complete capture files in `directory`, oldest first; none when it cannot be listed."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except OSError as error:
        log.warning("cannot list the captures in %s: %s", directory, error)
        return []
    return [directory / name for name in names if _NAME.fullmatch(name)]


class CaptureFiles:
    """Turns samples into rotated capture files in one directory; every method returns what it flushed.

    Writing never raises: a file that cannot be written (volume full, read-only, gone) is reported
    in its `Flushed.error`, its samples are lost, and the next file is tried afresh.
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
        self._bytes = 0
        self._opened = 0.0
        self._sequence = 0

    def remove_stale_temporaries(self) -> None:
        """Removes the hidden files an earlier process of this pod left when it died mid-write."""
        try:
            for entry in os.scandir(self.directory):
                match = _NAME.fullmatch(entry.name[1:]) if entry.name.startswith(".") else None
                if match and match["instance"] == self.instance:
                    os.unlink(entry.path)
                    log.info("removed %s, left by an interrupted writer", entry.path)
        except OSError as error:
            log.warning("cannot clean up %s: %s", self.directory, error)

    def add(self, sample: Sample) -> list[Flushed]:
        flushed: list[Flushed] = []
        if self._samples and (
            sample.layout != self._samples[0].layout
            or self._rows + sample.rows > self.rows_per_file
            or self._bytes + sample.nbytes > self.max_bytes
        ):
            flushed += self.flush()
        if not self._samples:
            self._opened = self._clock()
        self._samples.append(sample)
        self._rows += sample.rows
        self._bytes += sample.nbytes
        if self._rows >= self.rows_per_file or self._bytes >= self.max_bytes:
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
        self._samples, self._rows, self._bytes = [], 0, 0
        self._sequence += 1
        name = file_name(samples[0].timestamp, self.instance, self._sequence, self.format)
        try:
            path = _write_atomically(self.directory / name, _WRITERS[self.format], samples)
        # The volume, or encoding these rows: whatever fails costs this file's samples, not the writer.
        except Exception as error:
            return [Flushed(len(samples), rows, error=error)]
        return [Flushed(len(samples), rows, path=path)]


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


def _metadata(layout: Sequence[TensorSpec]) -> str:
    return json.dumps({"version": METADATA_VERSION, "tensors": [spec.as_json() for spec in layout]})


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
        *(pa.array(columns[name], type=pa.string()) for name in _STRING_COLUMNS),
    ]
    for spec in layout:
        flat = columns[spec.name].reshape(-1)
        values = pa.array(flat, type=pa.binary()) if spec.datatype == BYTES else pa.array(flat)
        arrays.append(pa.FixedSizeListArray.from_arrays(values, math.prod(spec.shape)))
    names = [TIMESTAMP, *_STRING_COLUMNS, *(spec.name for spec in layout)]
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata({METADATA_KEY: _metadata(layout)})
    # No dictionary for BYTES tensors: their decoded size is then bounded by what the file stores,
    # which the reader checks before it reads them (it skips BYTES columns with a dictionary).
    dictionary = [*_STRING_COLUMNS, *(_leaf(spec.name) for spec in layout if spec.datatype != BYTES)]
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
    np.savez_compressed(sink, **columns, **{METADATA_KEY: np.array(_metadata(layout))})


_WRITERS: Final[dict[CaptureFormat, Callable[[IO[bytes], list[Sample]], None]]] = {
    "parquet": _write_parquet,
    "npz": _write_npz,
}


def _layout(metadata: str | bytes) -> list[TensorSpec]:
    description = json.loads(metadata)
    if description.get("version") != METADATA_VERSION:
        raise ValueError(f"unknown capture metadata version {description.get('version')!r}")
    return [
        TensorSpec(str(spec["name"]), spec["role"], str(spec["datatype"]), tuple(int(n) for n in spec["shape"]))
        for spec in description["tensors"]
    ]


def _chosen(layout: list[TensorSpec], tensors: Sequence[str] | None) -> list[TensorSpec]:
    by_name = {spec.name: spec for spec in layout}
    if tensors is None:
        return layout
    missing = [name for name in tensors if name not in by_name]
    if missing:
        raise KeyError(f"no tensor {', '.join(missing)} (has {', '.join(by_name)})")
    return [by_name[name] for name in tensors]


class TooLargeError(ValueError):
    """A capture file whose columns would take more bytes than the reader may still use."""


# What a Python object per element costs besides its data (BYTES tensors come back as bytes objects).
_OBJECT_BYTES: Final = 64
# The tensor description of a file is small; a larger one is not a capture file.
_MAX_METADATA_BYTES: Final = 1024 * 1024


def _fits(nbytes: int, budget: int | None, path: Path) -> None:
    if budget is not None and nbytes > budget:
        raise TooLargeError(f"{path.name} holds {nbytes} bytes of columns, more than the {budget} left to read")


def _columns_to_read(chosen: Sequence[TensorSpec], strings: bool) -> list[str]:
    return [TIMESTAMP, *(_STRING_COLUMNS if strings else ()), *(spec.name for spec in chosen)]


def _parquet_bytes(parquet: pq.ParquetFile, names: Sequence[str]) -> int:
    """What the columns `names` take once read, from the file's metadata alone (strings apart: see _strings).

    Fixed-width values take their width; BYTES values what the file stores of them plus an object
    each, which holds because they are stored without a dictionary (one that expands a short value
    into many long ones is refused).
    """
    metadata = parquet.metadata
    chunks = [
        metadata.row_group(group).column(index)
        for group in range(metadata.num_row_groups)
        for index in range(metadata.num_columns)
    ]
    total = 0
    for name in names:
        if name in _STRING_COLUMNS:
            continue
        kind = parquet.schema_arrow.field(name).type
        values, per_row = (kind.value_type, kind.list_size) if pa.types.is_fixed_size_list(kind) else (kind, 1)
        if not (pa.types.is_binary(values) or pa.types.is_large_binary(values)):
            total += metadata.num_rows * per_row * max(1, values.bit_width // 8)
            continue
        for chunk in chunks:
            if chunk.path_in_schema == name or chunk.path_in_schema.startswith(f"{name}."):
                if chunk.has_dictionary_page:
                    raise ValueError(f"BYTES column {name} is dictionary encoded, which capture files never are")
                total += chunk.total_uncompressed_size + chunk.num_values * _OBJECT_BYTES
    return total


def _strings(column: pa.ChunkedArray, budget: int | None, path: Path) -> Array:
    """A string column read as a dictionary (so a long value repeated costs nothing until now) as a unicode array."""
    parts = []
    width = max((pc.max(pc.utf8_length(chunk.dictionary)).as_py() or 0 for chunk in column.chunks), default=0)
    _fits(len(column) * max(width, 1) * 4, budget, path)
    for chunk in column.chunks:
        dictionary = np.array(chunk.dictionary.to_pylist(), dtype=str)
        parts.append(dictionary[chunk.indices.to_numpy(zero_copy_only=False)])
    return np.concatenate(parts) if parts else np.array([], dtype=str)


def _read_parquet(path: Path, tensors: Sequence[str] | None, budget: int | None, strings: bool) -> dict[str, Array]:
    _fits(path.stat().st_size, budget, path)
    with pq.ParquetFile(path, read_dictionary=list(_STRING_COLUMNS)) as parquet:
        chosen = _chosen(_layout(parquet.schema_arrow.metadata[METADATA_KEY.encode()]), tensors)
        names = _columns_to_read(chosen, strings)
        nbytes = _parquet_bytes(parquet, names)
        _fits(nbytes, budget, path)
        table = parquet.read(columns=names)
    columns: dict[str, Array] = {TIMESTAMP: table[TIMESTAMP].to_numpy().astype(np.float64, copy=False)}
    for spec in chosen:
        values = table[spec.name].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        columns[spec.name] = values.astype(DATATYPES[spec.datatype], copy=False).reshape(table.num_rows, *spec.shape)
    for name in _STRING_COLUMNS if strings else ():
        columns[name] = _strings(table[name], None if budget is None else budget - nbytes, path)
        nbytes += columns[name].nbytes
    return columns


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype an array of an npz file declares, read without its data."""
    # numpy.lib.format ships no type information.
    with archive.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)  # type: ignore[no-untyped-call]
        if version == (1, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_1_0(member)  # type: ignore[no-untyped-call]
        elif version == (2, 0):
            shape, _fortran, dtype = np.lib.format.read_array_header_2_0(member)  # type: ignore[no-untyped-call]
        else:
            raise ValueError(f"{name}: .npy version {version} is not one a capture file is written in")
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects, which a capture file never does")
    return tuple(shape), dtype


def _npy(archive: zipfile.ZipFile, name: str) -> Array:
    with archive.open(f"{name}.npy") as member:
        array: Array = np.lib.format.read_array(member, allow_pickle=False)  # type: ignore[no-untyped-call]
    return array


def _read_npz(path: Path, tensors: Sequence[str] | None, budget: int | None, strings: bool) -> dict[str, Array]:
    with zipfile.ZipFile(path) as archive:
        shape, dtype = _npy_header(archive, METADATA_KEY)
        if shape != () or dtype.itemsize > _MAX_METADATA_BYTES:
            raise ValueError(f"{METADATA_KEY} is not a short string")
        chosen = _chosen(_layout(str(_npy(archive, METADATA_KEY))), tensors)
        names = _columns_to_read(chosen, strings)
        datatypes = {spec.name: spec.datatype for spec in chosen}
        nbytes = 0
        for name in names:
            shape, dtype = _npy_header(archive, name)
            count = math.prod(shape)
            nbytes += count * (dtype.itemsize + (_OBJECT_BYTES if datatypes.get(name) == BYTES else 0))
        _fits(nbytes, budget, path)
        columns = {name: _npy(archive, name) for name in names}
    for spec in chosen:
        columns[spec.name] = columns[spec.name].astype(DATATYPES[spec.datatype], copy=False)
    return columns


_READERS: Final[dict[str, Callable[[Path, Sequence[str] | None, int | None, bool], dict[str, Array]]]] = {
    SUFFIXES["parquet"]: _read_parquet,
    SUFFIXES["npz"]: _read_npz,
}


def read_layout(path: Path) -> list[TensorSpec]:
    """The tensors of a capture file (name, input or output, datatype, row shape), from its metadata."""
    if path.suffix == SUFFIXES["npz"]:
        with zipfile.ZipFile(path) as archive:
            return _layout(str(_npy(archive, METADATA_KEY)))
    return _layout(pq.read_schema(path).metadata[METADATA_KEY.encode()])


def read_capture_file(
    path: Path, tensors: Sequence[str] | None = None, *, max_bytes: int | None = None, strings: bool = True
) -> dict[str, Array]:
    """The columns of one capture file: the four row columns, and `tensors` (default: every tensor).

    `timestamp` is float64, `model`, `model_version` and `request_id` unicode arrays (left out
    without `strings`), each tensor (rows, *shape) of its datatype's NumPy type (BYTES: an object
    array of bytes). Raises TooLargeError when the columns would take more than `max_bytes` (checked
    before they are read), KeyError when a tensor in `tensors` is not in the file, and ValueError,
    OSError, a pyarrow error or whatever else a foreign or truncated file makes its reader raise
    when the file is not a complete capture file.
    """
    return _READERS[path.suffix](path, tensors, max_bytes, strings)


SkipReason = Literal["unreadable", "layout", "too_large"]


@dataclass(frozen=True)
class Skipped:
    """A capture file the reader left out of a window, and why."""

    path: Path
    reason: SkipReason  # unreadable (truncated, foreign), layout (other tensors than newer files), too_large
    detail: str


@dataclass(frozen=True)
class CaptureWindow:
    """The newest rows of a captures directory, by column, with what was left out."""

    columns: dict[str, Array]
    skipped: tuple[Skipped, ...] = ()
    # Rows ended before the number asked for because the next file would have passed max_bytes.
    bytes_limited: bool = False
    nbytes: int = 0

    @property
    def rows(self) -> int:
        return len(self.columns[TIMESTAMP]) if TIMESTAMP in self.columns else 0


def _nbytes(columns: dict[str, Array]) -> int:
    return sum(
        array.nbytes + (array.size * _OBJECT_BYTES if array.dtype.hasobject else 0) for array in columns.values()
    )


def read_window(
    directory: Path | str,
    newest_rows: int,
    tensors: Sequence[str] | None = None,
    *,
    max_bytes: int | None = None,
    strings: bool = True,
) -> CaptureWindow:
    """The newest `newest_rows` rows (fewer when there are not that many) of the complete files in `directory`.

    Reads the newest files first until it has enough rows, and returns the rows in time order as
    `read_capture_file` does, with `tensors` (default: those of the newest file read). At most
    `max_bytes` of columns are read: each file's size is checked against what is left before its
    data is read, and the window ends before the first file that does not fit (a file larger than
    `max_bytes` on its own is skipped). A file that cannot be read, whatever it holds, or whose
    tensors differ in datatype or row shape from the newest file's, is skipped with a log line and
    named in `skipped`: nothing in a file makes this raise.
    """
    if newest_rows < 1:
        raise ValueError(f"newest_rows must be at least 1, not {newest_rows}")
    parts: list[dict[str, Array]] = []
    skipped: list[Skipped] = []
    rows = used = 0
    limited = False
    for path in reversed(capture_files(Path(directory))):
        if rows >= newest_rows:
            break
        left = None if max_bytes is None else max_bytes - used
        try:
            part = read_capture_file(path, tensors, max_bytes=left, strings=strings)
        except TooLargeError as error:
            if parts:
                limited = True
                break
            skipped.append(Skipped(path, "too_large", str(error)))
        # Whatever a truncated or foreign file makes its reader raise costs that file only.
        except Exception as error:
            skipped.append(Skipped(path, "unreadable", f"{type(error).__name__}: {error}"))
        else:
            if parts and not _same_layout(parts[0], part):
                skipped.append(Skipped(path, "layout", "its tensors differ from those of newer files"))
                continue
            if tensors is None:
                tensors = [name for name in part if name not in RESERVED_NAMES]
            parts.append(part)
            rows += len(part[TIMESTAMP])
            used += _nbytes(part)
    for skip in skipped:
        log.warning("skipping capture file %s (%s): %s", skip.path, skip.reason, skip.detail)
    if not parts:
        return CaptureWindow({}, tuple(skipped), limited, 0)
    columns = {name: np.concatenate([part[name] for part in reversed(parts)])[-newest_rows:] for name in parts[0]}
    return CaptureWindow(columns, tuple(skipped), limited, _nbytes(columns))


def read_captures(directory: Path | str, newest_rows: int, tensors: Sequence[str] | None = None) -> dict[str, Array]:
    """The columns of `read_window` (an empty dict when no file could be read), without a bound in bytes."""
    return read_window(directory, newest_rows, tensors).columns


def _same_layout(reference: dict[str, Array], other: dict[str, Array]) -> bool:
    return reference.keys() == other.keys() and all(
        name in _STRING_COLUMNS or (array.dtype == other[name].dtype and array.shape[1:] == other[name].shape[1:])
        for name, array in reference.items()
    )
