"""The reference profile of the training data (contract.profile.DataProfile), for drift monitoring."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from scaleml_api.profile import (
    MAX_PROFILED_CATEGORIES,
    MAX_SAMPLE_ROWS,
    CategoricalSummary,
    CategoryCount,
    DataProfile,
    DataSample,
    FeatureProfile,
    Histogram,
    NumericSummary,
    TargetProfile,
    TensorSpec,
)
from scaleml_api.v1alpha1.trainingjob import DataSpec, ProfileSample
from scaleml_workloads.export.formats import INPUT_NAME
from scaleml_workloads.training.data import Task, TrainingData
from scaleml_workloads.training.models import feature_axis

Floats = npt.NDArray[np.float64]
Reduction = Literal["none", "mean", "pool"]

QUANTILE_LEVELS = np.linspace(0.0, 1.0, 101)
HISTOGRAM_BINS = 50
_BIN_LEVELS = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
# Narrower bins than a few floats apart would repeat edges: a histogram's range spans at least this many ULPs a bin.
_LEAST_ULPS_PER_BIN = 4
_LARGEST = float(np.finfo(np.float64).max)
# Which rows choose the listed categories of a feature with more than MAX_PROFILED_CATEGORIES (see
# `categorical_summary`): any fixed seed splits rows independently of their values.
_SELECTION_SEED = 0
# And how often that half must have seen a category to list it. A rarer one stays among the others: the
# chi-square test would mostly pool it (expected fewer than 5 times in a window), and the distances'
# nulls, drawn from the reference's frequencies, would take a category its half barely saw for rarer
# than it is (listed from a single sighting on, 1,000 categories of 3,000 made half of the windows
# without drift drift on the Jensen-Shannon distance).
_LEAST_CHOSEN_COUNT = 10


def profile_data(
    data: TrainingData,
    spec: DataSpec,
    task: Task,
    sha256: str,
    model_input: TensorSpec,
    seed: int,
    sample: ProfileSample = "rows",
) -> DataProfile:
    """Summaries of every feature and the target over all rows, and a seeded sample of at most MAX_SAMPLE_ROWS rows.

    With `sample` none, the sample is empty: the profile holds aggregates only, and no row.
    """
    sampled = sample_rows(data.rows, seed, sample)
    features: list[FeatureProfile] = []
    columns: dict[str, list[float | str | None]] = {}
    if data.tokens:
        features.append(_pooled_tokens(data))
    elif data.features.ndim == 2:
        features, columns = table_features(data.features, data.feature_names, data.categories, sampled)
    else:
        axis = feature_axis(data.features.ndim - 1)
        others = tuple(dim for dim in range(1, data.features.ndim) if dim != axis)
        (array,) = data.feature_names
        with np.errstate(invalid="ignore"):
            per_row = np.nanmean(data.features, axis=others, dtype=np.float64)
        for index in range(per_row.shape[1]):
            name = f"{array}[{index}]"
            features.append(feature_profile(name, per_row[:, index], "mean", index, None, axis=axis))
            columns[name] = _sample_values(per_row[sampled, index], None)
    target = _target(data, task)
    if task == "classification":
        columns[data.target_name] = [str(data.labels[code]) for code in data.target[sampled]]
    else:
        columns[data.target_name] = _sample_values(data.target[sampled].astype(np.float64), None)
    return DataProfile(
        source=spec.source,
        format=spec.format,
        sha256=sha256,
        rows=data.rows,
        input=model_input,
        features=features,
        target=target,
        sample=DataSample(seed=seed, rows=len(sampled), columns=columns if len(sampled) else {}),
    )


def profile_table(
    table: npt.NDArray[Any],
    names: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    *,
    source: str,
    format: Literal["parquet", "csv"],
    sha256: str,
    seed: int,
) -> DataProfile:
    """The profile of a plain table without a target: one feature per column, as training profiles its features.

    `table` is (rows, columns), NaN for missing values, a categorical column holding the codes of
    its `categories` (in code order); the model input is the table itself, float32.
    """
    sampled = sample_rows(len(table), seed, "rows")
    features, columns = table_features(table, names, categories, sampled)
    return DataProfile(
        source=source,
        format=format,
        sha256=sha256,
        rows=len(table),
        input=TensorSpec(name=INPUT_NAME, data_type="TYPE_FP32", dims=[len(names)]),
        features=features,
        sample=DataSample(seed=seed, rows=len(sampled), columns=columns if len(sampled) else {}),
    )


def sample_rows(rows: int, seed: int, sample: ProfileSample) -> npt.NDArray[np.int64]:
    """The sampled rows, ascending: at most MAX_SAMPLE_ROWS drawn with `seed`, none with `sample` none."""
    generator = np.random.default_rng(seed)
    size = min(rows, MAX_SAMPLE_ROWS) if sample == "rows" else 0
    return np.sort(generator.choice(rows, size=size, replace=False))


def table_features(
    table: npt.NDArray[Any],
    names: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    sampled: npt.NDArray[np.int64],
) -> tuple[list[FeatureProfile], dict[str, list[float | str | None]]]:
    """Per column of a (rows, columns) table, its feature profile and the values of the `sampled` rows."""
    features: list[FeatureProfile] = []
    columns: dict[str, list[float | str | None]] = {}
    for index, name in enumerate(names):
        values = table[:, index].astype(np.float64)
        named = categories.get(name)
        features.append(feature_profile(name, values, "none", index, named))
        columns[name] = _sample_values(values[sampled], named)
    return features, columns


def numeric_summary(values: Floats) -> NumericSummary | None:
    """Moments, quantiles and a histogram of the finite values; None when there are none.

    NaN is missing and ±inf invalid, as the drift monitor reads a window: `feature_profile` counts both as missing.
    """
    present = values[np.isfinite(values)].astype(np.float64)
    if present.size == 0:
        return None
    counts, edges = np.histogram(present, bins=_histogram_edges(np.sort(present)))
    # Sums, squares and differences of values near the largest float overflow. Scaled by a power of two to
    # magnitudes below 1, they cannot, and scaled back the moments and quantiles are the same numbers
    # (power-of-two scaling is exact), within the values' range.
    exponent = math.frexp(float(np.abs(present).max()))[1]
    scaled = np.ldexp(present, -exponent)
    quantiles = np.ldexp(np.quantile(scaled, QUANTILE_LEVELS), exponent)
    return NumericSummary(
        mean=math.ldexp(float(scaled.mean()), exponent),
        std=math.ldexp(float(scaled.std()), exponent),
        min=float(present.min()),
        max=float(present.max()),
        quantile_levels=[round(float(level), 2) for level in QUANTILE_LEVELS],
        quantiles=[float(value) for value in quantiles],
        histogram=Histogram(edges=[float(edge) for edge in edges], counts=[int(count) for count in counts]),
    )


def _histogram_edges(ordered: Floats) -> Floats:
    """Ascending, finite edges of bins holding about 1/HISTOGRAM_BINS of the values (`ordered`, ascending) each.

    Equal-width bins put nearly all of a heavy-tailed feature into one (98% of lognormal(0, 2.5)),
    where neither the Jensen-Shannon distance nor the report's plot sees it move: a tripling of every
    value went unseen. Bins of equal shares see a change wherever the values are. The edges are the
    values at every 1/HISTOGRAM_BINS of the rows; a value that holds more than a bin's share (the 0
    of a count, either value of a flag) repeats among them and gets a bin of its own, up to the next
    value when that is an edge, else halfway to it (the largest value, from halfway to the one
    before: the last bin is closed).
    """
    at = ordered[np.floor(_BIN_LEVELS * (len(ordered) - 1)).astype(np.int64)]
    heavy = np.unique(at[1:][at[1:] == at[:-1]])
    below = ordered[np.maximum(np.searchsorted(ordered, heavy, side="left") - 1, 0)]
    above = ordered[np.minimum(np.searchsorted(ordered, heavy, side="right"), len(ordered) - 1)]
    inner = above > heavy
    # Halves first: the sum of two floats can overflow, the sum of their halves cannot.
    halfway = np.where(inner, heavy / 2 + above / 2, below / 2 + heavy / 2)[~(inner & np.isin(above, at))]
    edges = np.unique(np.concatenate([at, halfway]))
    return edges if len(edges) > 1 else _constant_edges(float(at[0]))


def _constant_edges(value: float) -> Floats:
    """numpy's HISTOGRAM_BINS + 1 edges about a constant `value` (± 0.5), also where numpy's own fail.

    From 2**53 on, ± 0.5 rounds back to the value, and bins narrower than the floats between them
    make numpy index out of its edges: the range spans at least _LEAST_ULPS_PER_BIN ULPs a bin.
    """
    half = max(0.5, HISTOGRAM_BINS * _LEAST_ULPS_PER_BIN * math.ulp(value) / 2)
    return np.linspace(max(value - half, -_LARGEST), min(value + half, _LARGEST), HISTOGRAM_BINS + 1)


def categorical_summary(codes: npt.NDArray[np.int64], names: Sequence[str]) -> CategoricalSummary:
    """Frequencies of integer codes 0..len(names)-1, most frequent first, at most MAX_PROFILED_CATEGORIES.

    `codes` holds one code per row, or (rows, codes per row) for pooled tokens. With more categories
    than that, the listed ones are the most frequent on a seeded random half of the rows (and seen
    there at least _LEAST_CHOSEN_COUNT times), and every count, the listed ones' and the other
    categories', is of the other half only.
    """
    rows = codes[:, np.newaxis] if codes.ndim == 1 else codes
    counts = _code_counts(rows, len(names))
    cardinality = int(np.count_nonzero(counts))
    if cardinality > MAX_PROFILED_CATEGORIES:
        # Counted on the rows that chose them, the categories listed for being the most frequent would be
        # listed for their luck too: their shares overstated, the other categories' understated (12.9% against
        # 16.7% for 1,200 equally frequent categories in 50,000 rows), and 13 of 20 windows without drift
        # would drift. Chosen on one half of the rows and counted on the other, independent half, they are not.
        # Halves of rows, not of codes: a row's tokens share its topic.
        chosen = np.random.default_rng(_SELECTION_SEED).permutation(len(rows)) < len(rows) // 2
        selection = _code_counts(rows[chosen], len(names))
        top = np.argsort(-selection, kind="stable")[:MAX_PROFILED_CATEGORIES]
        counts = _code_counts(rows[~chosen], len(names))
        candidates = np.sort(top[selection[top] >= _LEAST_CHOSEN_COUNT])
    else:
        candidates = np.flatnonzero(counts)
    total = int(counts.sum())
    # Most frequent first; a stable sort of the codes in order keeps ties in code order.
    listed = candidates[np.argsort(-counts[candidates], kind="stable")]
    return CategoricalSummary(
        categories=[
            CategoryCount(value=names[code], code=int(code), count=int(counts[code]), frequency=counts[code] / total)
            for code in listed
        ],
        other_count=total - int(counts[listed].sum()),
        cardinality=cardinality,
    )


def _code_counts(rows: npt.NDArray[np.int64], categories: int) -> npt.NDArray[np.int64]:
    return np.bincount(rows.reshape(-1), minlength=categories)


def feature_profile(
    name: str,
    values: Floats,
    reduction: Reduction,
    index: int,
    categories: Sequence[str] | None,
    *,
    axis: int = 1,
) -> FeatureProfile:
    """The profile of one feature's values (NaN for missing); `categories` in code order for a categorical one.

    ±inf counts as missing too (see `numeric_summary`); a categorical feature's codes are never infinite.
    """
    missing = ~np.isfinite(values)
    common = {"name": name, "reduction": reduction, "axis": axis, "index": index, "count": len(values)}
    if categories is None:
        return FeatureProfile(**common, kind="numeric", missing=int(missing.sum()), numeric=numeric_summary(values))
    return FeatureProfile(
        **common,
        kind="categorical",
        missing=int(missing.sum()),
        categorical=categorical_summary(values[~missing].astype(np.int64), categories),
    )


def _pooled_tokens(data: TrainingData) -> FeatureProfile:
    tokens = data.features.reshape(data.rows, math.prod(data.sample_shape)).astype(np.int64)
    vocabulary = int(tokens.max()) + 1 if tokens.size else 0
    return FeatureProfile(
        name=data.feature_names[0],
        kind="categorical",
        reduction="pool",
        axis=None,
        index=None,
        count=int(tokens.size),
        missing=0,
        categorical=categorical_summary(tokens, [str(token) for token in range(vocabulary)]),
    )


def _target(data: TrainingData, task: Task) -> TargetProfile:
    if task == "classification":
        return TargetProfile(
            name=data.target_name,
            task=task,
            count=data.rows,
            categorical=categorical_summary(data.target.astype(np.int64), [str(label) for label in data.labels]),
        )
    return TargetProfile(
        name=data.target_name, task=task, count=data.rows, numeric=numeric_summary(data.target.astype(np.float64))
    )


def _sample_values(values: Floats, categories: Sequence[str] | None) -> list[float | str | None]:
    if categories is None:
        return [None if np.isnan(value) else float(value) for value in values]
    return [None if np.isnan(value) else categories[int(value)] for value in values]
