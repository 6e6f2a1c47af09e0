"""Tables of named columns, for the drift detector: matched by name, never by position.

A table is a pandas DataFrame, a pyarrow Table, a mapping of column names to numpy arrays or
lists (strings for categories; None or NaN for missing values), or anything else `pyarrow.table`
reads. pandas is never imported: a DataFrame is read column by column through pyarrow, so a column
that cannot be read is a message naming it, never an exception for the whole table.

Kinds, as training reads its data files: integers, floats, decimals and booleans are numeric;
strings (and dictionaries of them) categorical; a column of nothing but nulls fits either kind.
Any other type (timestamps, lists, binary, ...) is a problem of that column.

A reference table (`reference_values`) becomes one column per feature, a categorical one holding
the codes of its distinct strings in sorted order, as training encodes them. A window
(`encode_window`) becomes the detector's input by the reference's features: each from the column
of its name; categorical strings become the reference's codes, and strings it does not list a code
past them all (the detector's unseen bin); missing values NaN. Numbers given for a categorical
feature are the categories of their values (a column read as integers on one side and as strings
on the other, as a CSV column is when it holds no category that is not a number): 3 is the
category "3", and a number no category is falls in the unseen bin.
A feature whose column is absent or of the wrong kind has a gap (`window_gaps`): the detector
reports it without a statistic, never as missing values, which would read as drift.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

# pyarrow ships no type information.
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from scaleml_api.profile import FeatureProfile, TensorSpec
from scaleml_workloads.training.data import is_categorical, is_numeric

Floats = npt.NDArray[np.float64]
Kind = Literal["numeric", "categorical", "null"]

# The numeric types whose every value float32 holds exactly, and the whole numbers it holds exactly below.
_FLOAT32_EXACT: Final = (pa.float16(), pa.float32(), pa.int8(), pa.int16(), pa.uint8(), pa.uint16())
_FLOAT32_WHOLE: Final = 2**24


@dataclass(frozen=True)
class Columns:
    """A table read column by column: its column names in order, the readable columns, why the others cannot
    be read, its rows."""

    names: Sequence[str]
    arrays: Mapping[str, pa.ChunkedArray]
    problems: Mapping[str, str]
    rows: int
    messages: Sequence[str] = ()  # what is wrong with the table as a whole

    def kind(self, name: str) -> Kind:
        """The kind of a readable column."""
        kind = _kind(self.arrays[name].type)
        assert kind is not None, "read_columns keeps only columns of a known kind"
        return kind


@dataclass(frozen=True)
class Window:
    """A window as the detector's input: `values` (rows, columns of the input), or None when none can be read."""

    values: npt.NDArray[Any] | None  # float32 or float64 (see _dtype)
    gaps: Mapping[str, str]  # feature -> why it has no values to test
    messages: list[str]


def read_columns(table: object) -> Columns:
    """The columns of a table, by name (see the module for what a table is)."""
    if isinstance(table, Columns):
        return table
    try:
        named = _named(table)
    except (pa.ArrowException, TypeError, ValueError) as error:
        message = (
            f"a table has named columns (a pandas DataFrame, a pyarrow Table or a dict of columns), "
            f"not {type(table).__name__}: {error}"
        )
        return Columns((), {}, {}, 0, [message])
    counts = Counter(name for name, _ in named)
    arrays: dict[str, pa.ChunkedArray] = {}
    problems: dict[str, str] = {}
    for name, values in named:
        if counts[name] > 1:
            problems[name] = f"{counts[name]} columns are named {name!r}"
            continue
        try:
            column = _chunked(values)
        except (pa.ArrowException, TypeError, ValueError) as error:
            problems[name] = f"column {name!r} cannot be read as one column of values: {error}"
            continue
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            # What pyarrow makes of a CSV column in another encoding (Latin-1, say).
            problems[name] = f"column {name!r} holds text that is not UTF-8: write the file as UTF-8"
        elif _kind(column.type) is None:
            problems[name] = f"column {name!r} has type {column.type}, which is neither numeric nor a string"
        else:
            arrays[name] = column
    lengths = Counter(len(column) for column in arrays.values())
    rows = lengths.most_common(1)[0][0] if lengths else 0
    for name in [name for name, column in arrays.items() if len(column) != rows]:
        problems[name] = f"column {name!r} has {len(arrays.pop(name))} rows, the table's other columns {rows}"
    return Columns(list(counts), arrays, problems, rows)


def absent(columns: Columns, names: Sequence[str]) -> dict[str, str]:
    """Why each of `names` that is not a readable column is not."""
    missing = f"there is no column {{!r}}{_separator_hint(columns.names)}"
    return {name: columns.problems.get(name, missing.format(name)) for name in names if name not in columns.arrays}


def _separator_hint(names: Sequence[str]) -> str:
    """What a table of one column named like "a;b" most likely is: a file of another separator."""
    if len(names) == 1 and (separator := next((s for s in ";\t|" if s in names[0]), None)):
        shown = "tab" if separator == "\t" else repr(separator)
        return f" (the file's one column is named {names[0]!r}: a CSV file is separated by commas, not {shown})"
    return ""


def reference_values(columns: Columns, names: Sequence[str]) -> tuple[Floats, dict[str, list[str]], dict[str, str]]:
    """The named readable columns as a (rows, columns) table, the categories of the categorical ones in code order,
    and why the other `names` are left out."""
    left_out = absent(columns, names)
    kept = [name for name in names if name in columns.arrays]
    table = np.empty((columns.rows, len(kept)), dtype=np.float64)
    categories: dict[str, list[str]] = {}
    for position, name in enumerate(kept):
        if columns.kind(name) == "categorical":
            strings = _strings(columns.arrays[name])
            categories[name] = sorted(pc.unique(strings).drop_null().to_pylist())
            table[:, position] = _positions(strings, categories[name], math.nan)
        else:
            table[:, position] = _floats(columns.arrays[name])
    return table, categories, left_out


def window_gaps(columns: Columns, features: Sequence[FeatureProfile]) -> dict[str, str]:
    """Per feature that the table cannot give, why: its column is absent, unreadable or of the wrong kind."""
    gaps = absent(columns, [feature.name for feature in features])
    for feature in features:
        name = feature.name
        if feature.reduction != "none":
            gaps[name] = (
                f"the reference reads it from an array input (reduction {feature.reduction}), which a table of "
                "named columns does not hold: check the input tensor instead"
            )
        elif name not in gaps and feature.kind == "numeric" and columns.kind(name) == "categorical":
            gaps[name] = f"column {name!r} holds strings, but the reference's {name!r} is numeric"
    return gaps


def encode_window(
    columns: Columns, features: Sequence[FeatureProfile], model_input: TensorSpec, known: Collection[str]
) -> Window:
    """The window as the detector's input (see the module) for the `features` tested, NaN where no feature is.

    `known`: the names of all the reference's columns or features; other columns are ignored, with a message.
    """
    gaps = window_gaps(columns, features)
    messages = list(columns.messages)
    if extra := sorted({*columns.arrays, *columns.problems} - set(known)):
        messages.append(f"columns the reference has no feature for are ignored: {', '.join(extra)}")
    if len(model_input.dims) != 1 or all(feature.name in gaps for feature in features):
        return Window(None, gaps, messages)
    present = [feature for feature in features if feature.name not in gaps]
    values = np.empty((columns.rows, model_input.dims[0]), dtype=_dtype(columns, present))
    values[:, sorted(set(range(model_input.dims[0])) - {feature.index for feature in present})] = np.nan
    for feature in present:
        assert feature.index is not None, "a feature read as one value per row has an index"
        column = columns.arrays[feature.name]
        if feature.kind == "numeric" or columns.kind(feature.name) == "null":
            values[:, feature.index] = _floats(column)
        else:
            values[:, feature.index] = _codes(column, columns.kind(feature.name), feature, messages)
    return Window(values, gaps, messages)


def _dtype(columns: Columns, features: Sequence[FeatureProfile]) -> type[np.float32] | type[np.float64]:
    """float32 when it holds every value exactly (as the model's input does), else float64.

    The window keeps its columns' precision: a float64 column rounded to float32 would differ
    from the same values in a float64 reference, and the tests would see drift that is not there.
    """
    for feature in features:
        kind = _decoded_type(columns.arrays[feature.name].type)
        if feature.kind == "categorical" and columns.kind(feature.name) == "categorical":
            listed = feature.categorical.categories if feature.categorical else []
            exact = max((category.code for category in listed), default=0) < _FLOAT32_WHOLE
        else:
            exact = kind in _FLOAT32_EXACT or pa.types.is_null(kind) or pa.types.is_boolean(kind)
        if not exact:
            return np.float64
    return np.float32


def _named(table: object) -> list[tuple[str, Any]]:
    """The table's columns, name and values, in order."""
    if isinstance(table, pa.Table | pa.RecordBatch):
        return list(zip(table.column_names, table.columns, strict=True))
    if isinstance(table, Mapping):
        return [(str(name), values) for name, values in table.items()]
    # A DataFrame (pandas and the like): named columns, each read on its own.
    names = getattr(table, "columns", None)
    if names is not None and hasattr(table, "__getitem__") and not isinstance(table, np.ndarray):
        return [(str(name), table[name]) for name in names]
    read = pa.table(table)
    return list(zip(read.column_names, read.columns, strict=True))


def _chunked(values: object) -> pa.ChunkedArray:
    if isinstance(values, pa.ChunkedArray):
        return values
    if isinstance(values, pa.Array):
        return pa.chunked_array([values])
    # from_pandas: NaN is missing in any column, as in a DataFrame.
    return pa.chunked_array([pa.array(values, from_pandas=True)])


def _kind(kind: pa.DataType) -> Kind | None:
    if pa.types.is_dictionary(kind):
        return _kind(kind.value_type)
    if pa.types.is_null(kind):
        return "null"
    if is_categorical(kind):
        return "categorical"
    return "numeric" if is_numeric(kind) else None


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _decoded_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _floats(column: pa.ChunkedArray) -> Floats:
    return np.asarray(_float_column(column).to_numpy(), dtype=np.float64)


def _float_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    decoded = _decoded(column)
    if pa.types.is_decimal(decoded.type):
        # Arrow's decimal cast is not correctly rounded (0.35 becomes 0.35000000000000003): the same
        # prices as a CSV's text, or as another decimal type, would be other numbers, and drift.
        # Through their text they are the nearest floats, as Python's and Arrow's parsers make them.
        decoded = pc.cast(decoded, pa.string())
    # Unsafe: integers beyond 2**53 round to the nearest float rather than fail.
    return pc.cast(decoded, pa.float64(), safe=False)


def _strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(_decoded(column), pa.string())


def _positions(values: pa.ChunkedArray, listed: Sequence[Any], absent: float) -> Floats:
    """Each value's position in `listed`; `absent` for a value it does not hold, NaN for a missing one."""
    found = pc.index_in(values, value_set=pa.array(listed, values.type))
    positions = np.asarray(pc.fill_null(found, -1).to_numpy(), dtype=np.float64)
    positions[positions < 0] = absent
    positions[np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), dtype=bool)] = np.nan
    return positions


def _codes(column: pa.ChunkedArray, kind: Kind, feature: FeatureProfile, messages: list[str]) -> Floats:
    """A categorical feature's column as the codes the reference gives its categories (see the module)."""
    listed = feature.categorical.categories if feature.categorical else []
    # Past every code the reference knows: the detector's unseen bin.
    unseen = max((category.code for category in listed), default=-1) + 1
    codes = np.array([category.code for category in listed] + [unseen], dtype=np.float64)
    if kind == "categorical":
        positions = _positions(_strings(column), [category.value for category in listed], len(listed))
    else:
        # A number is the category of its value: one file holds the column as text, the other as
        # numbers when it happens to hold no category that is not one (grades 1-5 without "U").
        # A category that is no number matches no number.
        numbers = [(place, _number(category.value)) for place, category in enumerate(listed)]
        numbered = [(place, number) for place, number in numbers if number is not None]
        # + 0.0 makes -0.0 the category "0", which it is as text.
        values = pc.add(_float_column(column), 0.0)
        found = _positions(values, [number for _, number in numbered], len(numbered))
        places = np.array([place for place, _ in numbered] + [len(listed)], dtype=np.float64)
        positions = np.full(len(found), np.nan)
        positions[np.isfinite(found)] = places[found[np.isfinite(found)].astype(np.int64)]
        if len(numbered) < len(listed):
            messages.append(
                f"column {feature.name!r} holds numbers for a categorical feature: each is read as the category "
                "of its value"
            )
    finite = np.isfinite(positions)
    encoded = np.full(len(positions), np.nan)
    encoded[finite] = codes[positions[finite].astype(np.int64)]
    return encoded


def _number(value: str) -> float | None:
    """The category as a finite number, or None when it is not one."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number + 0.0 if math.isfinite(number) else None
