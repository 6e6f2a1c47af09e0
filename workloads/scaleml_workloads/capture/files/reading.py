"""Reading one capture file back, bounded: what its columns would take is checked before they are read."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from scaleml_workloads.capture.files.layout import (
    BYTES,
    DATATYPES,
    METADATA_KEY,
    STRING_COLUMNS,
    TIMESTAMP,
    Array,
    TensorSpec,
    parse_metadata,
)
from scaleml_workloads.capture.files.names import SUFFIXES


class TooLargeError(ValueError):
    """A capture file whose columns would take more bytes than the reader may still use."""


# What a Python object per element costs besides its data (BYTES tensors come back as bytes objects).
OBJECT_BYTES: Final = 64
# The tensor description of a file is small; a larger one is not a capture file.
_MAX_METADATA_BYTES: Final = 1024 * 1024


def read_layout(path: Path) -> list[TensorSpec]:
    """The tensors of a capture file (name, input or output, datatype, row shape), from its metadata."""
    if path.suffix == SUFFIXES["npz"]:
        with zipfile.ZipFile(path) as archive:
            return parse_metadata(str(_npy(archive, METADATA_KEY)))
    return parse_metadata(pq.read_schema(path).metadata[METADATA_KEY.encode()])


def read_capture_file(
    path: Path,
    tensors: Sequence[str] | None = None,
    *,
    max_bytes: int | None = None,
    strings: Sequence[str] = STRING_COLUMNS,
) -> dict[str, Array]:
    """The columns of one capture file: `timestamp`, the row columns in `strings`, and `tensors` (default: all).

    `timestamp` is float64, `model`, `model_version` and `request_id` unicode arrays (those of them
    in `strings`), each tensor (rows, *shape) of its datatype's NumPy type (BYTES: an object
    array of bytes). Raises TooLargeError when the columns would take more than `max_bytes` (checked
    before they are read), KeyError when a tensor in `tensors` is not in the file, and ValueError,
    OSError, a pyarrow error or whatever else a foreign or truncated file makes its reader raise
    when the file is not a complete capture file.
    """
    return _READERS[path.suffix](path, tensors, max_bytes, strings)


def columns_nbytes(columns: dict[str, Array]) -> int:
    """What columns read from capture files take in memory, Python objects included."""
    return sum(array.nbytes + (array.size * OBJECT_BYTES if array.dtype.hasobject else 0) for array in columns.values())


def _chosen(layout: list[TensorSpec], tensors: Sequence[str] | None) -> list[TensorSpec]:
    by_name = {spec.name: spec for spec in layout}
    if tensors is None:
        return layout
    missing = [name for name in tensors if name not in by_name]
    if missing:
        raise KeyError(f"no tensor {', '.join(missing)} (has {', '.join(by_name)})")
    return [by_name[name] for name in tensors]


def _fits(nbytes: int, budget: int | None, path: Path) -> None:
    if budget is not None and nbytes > budget:
        raise TooLargeError(f"{path.name} holds {nbytes} bytes of columns, more than the {budget} left to read")


def _stored_types(chosen: Sequence[TensorSpec]) -> dict[str, str]:
    """The datatype each column must be stored in, by name: the timestamp's FP64 and each tensor's own.

    A file stores exactly what its metadata declares, and the reader counts the bytes it may read
    by what the file stores: a column stored narrower than declared (bool for FP64) would grow past
    that count when converted, so it is refused instead.
    """
    return {TIMESTAMP: "FP64", **{spec.name: spec.datatype for spec in chosen}}


def _mismatch(name: str, stored: str, datatype: str) -> ValueError:
    return ValueError(f"{name} is stored as {stored}, not as its declared {datatype}")


def _columns_to_read(chosen: Sequence[TensorSpec], strings: Sequence[str]) -> list[str]:
    return [TIMESTAMP, *strings, *(spec.name for spec in chosen)]


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
        if name in STRING_COLUMNS:
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
                total += chunk.total_uncompressed_size + chunk.num_values * OBJECT_BYTES
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


def _read_parquet(
    path: Path, tensors: Sequence[str] | None, budget: int | None, strings: Sequence[str]
) -> dict[str, Array]:
    _fits(path.stat().st_size, budget, path)
    with pq.ParquetFile(path, read_dictionary=list(STRING_COLUMNS)) as parquet:
        chosen = _chosen(parse_metadata(parquet.schema_arrow.metadata[METADATA_KEY.encode()]), tensors)
        names = _columns_to_read(chosen, strings)
        for name, datatype in _stored_types(chosen).items():
            _check_arrow_type(name, parquet.schema_arrow.field(name).type, datatype)
        nbytes = _parquet_bytes(parquet, names)
        _fits(nbytes, budget, path)
        table = parquet.read(columns=names)
    columns: dict[str, Array] = {TIMESTAMP: table[TIMESTAMP].to_numpy().astype(np.float64, copy=False)}
    for spec in chosen:
        values = table[spec.name].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        columns[spec.name] = values.astype(DATATYPES[spec.datatype], copy=False).reshape(table.num_rows, *spec.shape)
    for name in strings:
        columns[name] = _strings(table[name], None if budget is None else budget - nbytes, path)
        nbytes += columns[name].nbytes
    return columns


def _check_arrow_type(name: str, kind: pa.DataType, datatype: str) -> None:
    """Refuse a Parquet column (a tensor's: a fixed-size list) whose values are not of `datatype`."""
    values = kind.value_type if pa.types.is_fixed_size_list(kind) else kind
    if datatype == BYTES:
        if not (pa.types.is_binary(values) or pa.types.is_large_binary(values)):
            raise _mismatch(name, str(values), datatype)
    elif values != pa.from_numpy_dtype(DATATYPES[datatype]):
        raise _mismatch(name, str(values), datatype)


def _check_npy_dtype(name: str, dtype: np.dtype[Any], datatype: str) -> None:
    """Refuse an npz array not stored as `datatype` (BYTES: fixed-width byte strings, as written)."""
    if datatype == BYTES:
        if dtype.kind != "S":
            raise _mismatch(name, str(dtype), datatype)
    elif dtype != DATATYPES[datatype]:
        raise _mismatch(name, str(dtype), datatype)


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


def _read_npz(
    path: Path, tensors: Sequence[str] | None, budget: int | None, strings: Sequence[str]
) -> dict[str, Array]:
    # Its members' headers bound what they inflate to; the file itself is bounded first, as a Parquet file is.
    _fits(path.stat().st_size, budget, path)
    with zipfile.ZipFile(path) as archive:
        shape, dtype = _npy_header(archive, METADATA_KEY)
        if shape != () or dtype.itemsize > _MAX_METADATA_BYTES:
            raise ValueError(f"{METADATA_KEY} is not a short string")
        chosen = _chosen(parse_metadata(str(_npy(archive, METADATA_KEY))), tensors)
        names = _columns_to_read(chosen, strings)
        datatypes = _stored_types(chosen)
        nbytes = 0
        for name in names:
            shape, dtype = _npy_header(archive, name)
            if name in datatypes:
                _check_npy_dtype(name, dtype, datatypes[name])
            count = math.prod(shape)
            nbytes += count * (dtype.itemsize + (OBJECT_BYTES if datatypes.get(name) == BYTES else 0))
        _fits(nbytes, budget, path)
        columns = {name: _npy(archive, name) for name in names}
    for spec in chosen:
        columns[spec.name] = columns[spec.name].astype(DATATYPES[spec.datatype], copy=False)
    return columns


_READERS: Final[dict[str, Callable[[Path, Sequence[str] | None, int | None, Sequence[str]], dict[str, Array]]]] = {
    SUFFIXES["parquet"]: _read_parquet,
    SUFFIXES["npz"]: _read_npz,
}
