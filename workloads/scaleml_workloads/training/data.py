"""Reading the training data and checking it before any training starts.

Only numpy and pyarrow here, no torch: `python -m scaleml_workloads.training --check` runs these
checks in a second, and a worker fails on bad data before it joins the process group.

Every problem raises `InvalidInputError` with a message that names the file, the column (or npz
array) and what is wrong with it.

Feature columns must be numeric (integers, floats, decimals, booleans) or strings. String and
dictionary columns are categorical: each value is replaced by its index in the sorted list of the
column's distinct values, and the list is kept (`TrainingData.categories`) for the model card and
the reference profile, so a client can encode the same way. Other types (timestamps, lists,
binary, ...) are rejected, naming the column and its type. Missing values stay NaN here; the model
replaces them (see `models.Standardize`). npz features must be numeric arrays.

Numbers must be finite in float32, the type the model computes in: a feature (or a regression
target) that holds +inf or -inf, or a value beyond float32's range (about ±3.4e38, which becomes
±inf on conversion), is rejected, naming the column, how many such values it holds and the first
one's row. One such value turns the standardisation, and then every weight, into NaN.

Classification targets are mapped to class indices 0..K-1 in the sorted order of their distinct
values; `TrainingData.labels` keeps the original label of each index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

# pyarrow ships no type information.
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from scaleml_api.runtime import TrainingRun
from scaleml_api.v1alpha1.architectures import TransformerParams, parse_params
from scaleml_api.v1alpha1.trainingjob import DataSpec
from scaleml_workloads.csvfiles import read_csv
from scaleml_workloads.training.errors import InvalidInputError

Label = str | int | float | bool
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class TrainingData:
    """A checked data set in the form the model takes."""

    source: Path
    # (rows, *sample_shape): float32 with NaN for missing values, or int64 token ids.
    features: npt.NDArray[np.float32] | npt.NDArray[np.int64]
    # (rows,): the class index for classification, float32 for regression.
    target: npt.NDArray[np.int64] | npt.NDArray[np.float32]
    # One name per column when the features are a table (2-D); else the name of the one npz array.
    feature_names: tuple[str, ...]
    # Per categorical feature, its categories in code order.
    categories: Mapping[str, tuple[str, ...]]
    # Classification: the original label of each class index. Empty for regression.
    labels: tuple[Label, ...]
    target_name: str
    # Per sensitive feature (spec.evaluation), each row's group as text: read for the audit only.
    groups: Mapping[str, npt.NDArray[np.str_]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(size) for size in self.features.shape[1:])

    @property
    def tokens(self) -> bool:
        return bool(self.features.dtype == np.int64)


def load_run_data(run: TrainingRun) -> TrainingData:
    """The run's data, checked for its model (token ids for a transformer with a vocabulary)."""
    spec = run.spec
    params = parse_params(spec.model.architecture, spec.model.params)
    vocab_size = params.vocab_size if isinstance(params, TransformerParams) else 0
    sensitive = spec.evaluation.sensitive_features
    return load_data(Path(run.data_dir), spec.data, spec.model.task, vocab_size=vocab_size, sensitive=sensitive)


def load_data(
    data_dir: Path, spec: DataSpec, task: Task, *, vocab_size: int = 0, sensitive: Sequence[str] = ()
) -> TrainingData:
    """Read `<data_dir>/<spec.source>` and check it against `spec.checks`.

    `vocab_size > 0` means the model embeds token ids: the npz features must then be integers in
    [0, vocab_size). `sensitive` names columns (or 1-D arrays) read as groups for the audit.
    """
    path = data_dir / spec.source.lstrip("/")
    if not path.is_file():
        raise InvalidInputError(f"data file {path} does not exist")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"data file {path} is empty")
    if spec.format == "npz":
        features, names, categories, target, target_missing, groups = _read_npz(path, spec, vocab_size, sensitive)
    else:
        features, names, categories, target, target_missing, groups = _read_table(path, spec, sensitive)
    rows = features.shape[0]
    if rows < spec.checks.min_rows:
        raise InvalidInputError(f"data file {path} has {rows} rows, fewer than checks.minRows={spec.checks.min_rows}")
    keep = ~target_missing
    if not keep.all():
        features, target = features[keep], target[keep]
        groups = {name: values[keep] for name, values in groups.items()}
    if task == "classification":
        labels, codes = _classes(path, spec.target, target)
        return TrainingData(path, features, codes, names, categories, labels, spec.target, groups)
    if target.dtype.kind not in "biuf":
        raise InvalidInputError(
            f"target column '{spec.target}' in {path} has dtype {target.dtype}; regression needs a numeric target"
        )
    _check_float32(path, {spec.target: target}, "target column")
    return TrainingData(path, features, target.astype(np.float32), names, categories, (), spec.target, groups)


# A group per distinct value: beyond this many, a column is a measurement to bin, not a set of groups.
MAX_GROUPS: Final = 100
MISSING_GROUP: Final = "(missing)"


def group_labels(path: Path, name: str, values: npt.NDArray[np.generic]) -> npt.NDArray[np.str_]:
    """Each row's group of the sensitive column `name`: its value as text, MISSING_GROUP where absent."""
    if values.ndim != 1:
        raise InvalidInputError(
            f"sensitive feature '{name}' in {path} has shape {values.shape}; it must be one value per row"
        )
    missing = _missing(values)
    if values.dtype.kind == "f" and not missing.all() and np.all(np.mod(values[~missing], 1) == 0):
        values = np.where(missing, 0, values).astype(np.int64)
    text = np.array(["true" if v is True else "false" if v is False else str(v) for v in values.tolist()], dtype=str)
    text = np.where(missing, MISSING_GROUP, text)
    distinct = np.unique(text)
    if len(distinct) > MAX_GROUPS:
        raise InvalidInputError(
            f"sensitive feature '{name}' in {path} has {len(distinct)} distinct values, more than {MAX_GROUPS} groups; "
            "bin it into a column of groups (e.g. age bands) and name that one in evaluation.sensitiveFeatures"
        )
    return text


_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)


def _not_float32(what: str, values: npt.NDArray[np.generic]) -> str:
    """Why `values` cannot become float32 the model trains on (an infinity, a value out of range), or ""."""
    if values.dtype.kind != "f":
        return ""
    with np.errstate(invalid="ignore", over="ignore"):
        bad = np.isinf(values) | (np.abs(values) > _FLOAT32_MAX)
    count = int(np.count_nonzero(bad))
    if count == 0:
        return ""
    first = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return (
        f"{what} holds {count} {'value' if count == 1 else 'values'} that float32 cannot hold (±inf, or beyond "
        f"about ±3.4e38), the first at row {int(first[0])}: {float(values[first])!r}; the model would train to "
        "NaN: replace them, or leave them missing (null or NaN)"
    )


def _check_float32(path: Path, columns: Mapping[str, npt.NDArray[np.generic]], what: str) -> None:
    problems = [problem for name, values in columns.items() if (problem := _not_float32(f"{what} '{name}'", values))]
    if problems:
        raise InvalidInputError(f"{path}: {'; '.join(problems)}")


def split_rows(rows: int, fraction: float, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Training and validation row indices: a seeded permutation, the first `fraction` held out."""
    order = np.random.default_rng(seed).permutation(rows).astype(np.int64)
    held_out = 0 if fraction == 0 else max(1, round(rows * fraction))
    if held_out >= rows:
        raise InvalidInputError(
            f"data.validationSplit={fraction} holds out all {rows} rows; no rows are left for training"
        )
    # Sorted, so that gathering a batch reads memory in order; the sampler shuffles anyway.
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, hex, read in chunks so a large data set never sits in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


_Columns = tuple[
    npt.NDArray[np.float32] | npt.NDArray[np.int64],
    tuple[str, ...],
    dict[str, tuple[str, ...]],
    npt.NDArray[np.generic],
    npt.NDArray[np.bool_],
    dict[str, npt.NDArray[np.str_]],
]


def _requested(
    path: Path, spec: DataSpec, available: Sequence[str], kind: str, sensitive: Sequence[str] = ()
) -> list[str]:
    """The feature names, after checking that they, the target and the sensitive features exist.

    Without spec.features, every column but the target is a feature, except sensitive ones: a
    column named for the audit only is never fed to the model unless spec.features lists it.
    """
    features = list(spec.features) or [name for name in available if name not in (spec.target, *sensitive)]
    listing = f"available {kind}s: {', '.join(available) or '(none)'}"
    if spec.target not in available:
        raise InvalidInputError(f"target {kind} '{spec.target}' not found in {path}; {listing}")
    missing = [name for name in features if name not in available]
    if missing:
        quoted = ", ".join(f"'{name}'" for name in missing)
        raise InvalidInputError(f"feature {kind}s {quoted} not found in {path}; {listing}")
    absent = [name for name in sensitive if name not in available]
    if absent:
        quoted = ", ".join(f"'{name}'" for name in absent)
        raise InvalidInputError(f"evaluation.sensitiveFeatures {quoted} not found in {path}; {listing}")
    if not features:
        raise InvalidInputError(f"{path} has no feature {kind}s besides the target '{spec.target}'")
    return features


def _check_missing(path: Path, spec: DataSpec, fractions: Mapping[str, float]) -> None:
    limit = spec.checks.max_missing_fraction
    problems = [
        f"column '{name}' has {fraction:.1%} missing values ({fraction:.4g}), "
        f"more than checks.maxMissingFraction={limit}"
        for name, fraction in fractions.items()
        if fraction > limit
    ]
    if problems:
        raise InvalidInputError(f"{path}: {'; '.join(problems)}")


def _read_table(path: Path, spec: DataSpec, sensitive: Sequence[str]) -> _Columns:
    try:
        if spec.format == "csv":
            table = read_csv(path)
            available = table.column_names
        else:
            available = pq.read_schema(path).names
        features = _requested(path, spec, available, "column", sensitive)
        if spec.format == "parquet":
            extra = [name for name in sensitive if name not in (*features, spec.target)]
            table = pq.read_table(path, columns=[*features, spec.target, *extra])
    except (pa.ArrowException, OSError) as error:
        raise InvalidInputError(f"cannot read {spec.format} file {path}: {error}") from None
    if table.num_rows == 0:
        raise InvalidInputError(f"data file {path} has no rows")
    columns: list[npt.NDArray[np.float32]] = []
    categories: dict[str, tuple[str, ...]] = {}
    rejected: list[str] = []
    for name in features:
        column = table.column(name)
        if is_categorical(column.type):
            values, categories[name] = _encode_categories(column)
            columns.append(values)
        elif is_numeric(column.type):
            wide = column.cast(pa.float64()).to_numpy()
            if problem := _not_float32(f"feature column '{name}'", wide):
                rejected.append(problem)
            columns.append(wide.astype(np.float32))
        else:
            rejected.append(f"feature column '{name}' has type {column.type}, which is neither numeric nor a string")
    if rejected:
        raise InvalidInputError(f"{path}: {'; '.join(rejected)}")
    target_column = table.column(spec.target)
    if pa.types.is_dictionary(target_column.type):
        target_column = target_column.cast(target_column.type.value_type)
    target = target_column.to_numpy()
    target_missing = _missing(target)
    fractions = {name: float(np.isnan(values).mean()) for name, values in zip(features, columns, strict=True)}
    fractions[spec.target] = float(target_missing.mean())
    _check_missing(path, spec, fractions)
    groups = {name: group_labels(path, name, _plain(table.column(name))) for name in sensitive}
    return np.stack(columns, axis=1), tuple(features), categories, target, target_missing, groups


def _plain(column: pa.ChunkedArray) -> npt.NDArray[np.generic]:
    """A column's values as numpy, nulls as None (or NaN), dictionaries decoded."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def is_numeric(kind: pa.DataType) -> bool:
    """Numbers: integers, floats, decimals and booleans."""
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)) or bool(
        pa.types.is_boolean(kind)
    )


def is_categorical(kind: pa.DataType) -> bool:
    """Strings, or dictionaries of them."""
    if pa.types.is_dictionary(kind):
        return is_categorical(kind.value_type)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _encode_categories(column: pa.ChunkedArray) -> tuple[npt.NDArray[np.float32], tuple[str, ...]]:
    strings = column.cast(pa.string())
    categories = tuple(sorted(pc.unique(strings).drop_null().to_pylist()))
    codes = pc.index_in(strings, value_set=pa.array(categories, pa.string()))
    # Nulls become NaN, the same as a missing number.
    return codes.cast(pa.float64()).to_numpy().astype(np.float32), categories


def _missing(values: npt.NDArray[np.generic]) -> npt.NDArray[np.bool_]:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.fromiter((value is None for value in values), dtype=np.bool_, count=len(values))
    return np.zeros(len(values), dtype=np.bool_)


def _read_npz(path: Path, spec: DataSpec, vocab_size: int, sensitive: Sequence[str]) -> _Columns:
    try:
        with np.load(path, allow_pickle=False) as archive:
            features = _requested(path, spec, list(archive.files), "array", sensitive)
            arrays = {name: archive[name] for name in [*features, spec.target]}
            audited = {name: archive[name] for name in sensitive}
    except (OSError, ValueError, EOFError) as error:
        raise InvalidInputError(f"cannot read npz file {path}: {error}") from None
    target = arrays.pop(spec.target)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1:
        raise InvalidInputError(f"target array '{spec.target}' in {path} has shape {target.shape}; it must be 1-D")
    rows = target.shape[0]
    if rows == 0:
        raise InvalidInputError(f"data file {path} has no rows")
    for name, array in arrays.items():
        if array.ndim == 0 or array.shape[0] != rows:
            raise InvalidInputError(
                f"feature array '{name}' in {path} has shape {array.shape}; "
                f"its first dimension must be the {rows} rows of the target"
            )
        if array.dtype.kind not in "biuf":
            raise InvalidInputError(f"feature array '{name}' in {path} has dtype {array.dtype}; it must be numeric")
    for name, array in audited.items():
        if array.shape[:1] != (rows,):
            raise InvalidInputError(
                f"sensitive feature array '{name}' in {path} has shape {array.shape}; it must hold one value for "
                f"each of the {rows} rows of the target"
            )
    groups = {name: group_labels(path, name, array) for name, array in audited.items()}
    target_missing = _missing(target)
    fractions = {
        name: float(np.isnan(array).mean()) if array.dtype.kind == "f" else 0.0 for name, array in arrays.items()
    }
    fractions[spec.target] = float(target_missing.mean())
    _check_missing(path, spec, fractions)
    _check_float32(path, arrays, "feature array")
    if vocab_size > 0:
        return (*_token_ids(path, arrays, vocab_size), {}, target, target_missing, groups)
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        values = array.astype(np.float32)
        if values.ndim == 1:
            return values[:, None], (name,), {}, target, target_missing, groups
        names = tuple(f"{name}[{index}]" for index in range(values.shape[1])) if values.ndim == 2 else (name,)
        return values, names, {}, target, target_missing, groups
    not_columns = [name for name, array in arrays.items() if array.ndim != 1]
    if not_columns:
        raise InvalidInputError(
            f"feature arrays {', '.join(repr(name) for name in not_columns)} in {path} are not 1-D; "
            "several feature arrays are combined as columns, so each must be 1-D (or name a single array)"
        )
    values = np.stack([array.astype(np.float32) for array in arrays.values()], axis=1)
    return values, tuple(arrays), {}, target, target_missing, groups


def _token_ids(
    path: Path, arrays: Mapping[str, npt.NDArray[np.generic]], vocab_size: int
) -> tuple[npt.NDArray[np.int64], tuple[str, ...]]:
    if len(arrays) != 1:
        raise InvalidInputError(f"a model over token ids takes one feature array from {path}, not {len(arrays)}")
    ((name, array),) = arrays.items()
    if array.dtype.kind not in "iu" or array.ndim != 2:
        raise InvalidInputError(
            f"feature array '{name}' in {path} has dtype {array.dtype} and shape {array.shape}; "
            "token ids (model.params.vocabSize > 0) must be a 2-D integer array (rows x sequence)"
        )
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise InvalidInputError(
            f"feature array '{name}' in {path} holds token ids in [{array.min()}, {array.max()}], "
            f"outside [0, vocabSize={vocab_size})"
        )
    return array.astype(np.int64), (name,)


def _classes(path: Path, name: str, target: npt.NDArray[np.generic]) -> tuple[tuple[Label, ...], npt.NDArray[np.int64]]:
    if target.dtype.kind not in "biufOUS":
        raise InvalidInputError(
            f"target column '{name}' in {path} has dtype {target.dtype}; classification needs labels "
            "that are numbers, booleans or strings"
        )
    try:
        classes, codes = np.unique(target, return_inverse=True)
    except TypeError as error:
        raise InvalidInputError(f"target column '{name}' in {path} mixes label types: {error}") from None
    labels = tuple(label.item() if isinstance(label, np.generic) else label for label in classes)
    if len(labels) < 2:
        only = labels[0] if labels else "none"
        raise InvalidInputError(
            f"target column '{name}' in {path} has a single class ({only!r}); classification needs at least 2"
        )
    return labels, codes.astype(np.int64).reshape(-1)
