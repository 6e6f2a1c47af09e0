"""The layout every statistic reads: columns of features sorted once, and their values counted into bins.

Data come as columns of features: a tensor shaped (rows, features) in which every non-finite
value (NaN, +inf, -inf) is missing, so each feature may have its own number of values. Tests on
raw values read the columns sorted once (`sort_columns`); tests on bins read frequencies per bin
(`quantile_bin_counts`, `histogram_counts` and `share`, or category counts the caller makes).
The searches in sorted columns (`counts_at_most`, `counts_below`, `as_thresholds`, `value_counts`)
and the chunking of work arrays (`chunks`) serve the tests of the sibling modules.

Precision: the same value held at float32 on one side and at float64 on the other is two different
numbers (float32(0.1) is 0.10000000149), and a comparison of the two would put every tied value on
the wrong side of the other's steps and edges. `float32_data` tells which columns hold float32 values
(at any dtype), `on_float32_grid` rounds values to float32 without changing their dtype, and columns
marked `at_float32` are compared with thresholds rounded to float32 (`as_thresholds`). The detector
decides which side is rounded (`detector._at_one_precision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from torch import Tensor

# Work arrays of (features, values) are cut into chunks of about this many elements.
_CHUNK_ELEMENTS: Final = 1 << 24
_FLOAT32_MAX: Final = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class SortedColumns:
    """Columns sorted ascending, each with its missing values replaced by +inf and moved to its end."""

    values: Tensor  # (features, rows)
    counts: Tensor  # (features,) int64: the valid values at the start of each row
    # (features,) bool, None for none: the features whose thresholds (`as_thresholds`) are taken from the
    # other side's values rounded to float32, to compare float32 data at float32 (see the module).
    at_float32: Tensor | None = None

    @property
    def features(self) -> int:
        return int(self.values.shape[0])

    def take(self, features: slice | Tensor) -> SortedColumns:
        """These columns' `features` (a slice, or positions)."""
        at_float32 = None if self.at_float32 is None else self.at_float32[features]
        return SortedColumns(self.values[features], self.counts[features], at_float32)


def sort_columns(data: Tensor, at_float32: Tensor | None = None) -> SortedColumns:
    """Each feature of `data` (rows, features) sorted, missing values last; `at_float32` as SortedColumns has it.

    Fastest when `data` is the transpose of a contiguous (features, rows) tensor.
    """
    inf = math.inf
    filled = torch.nan_to_num(data.t(), nan=inf, posinf=inf, neginf=inf).contiguous()
    ordered = _sorted_rows(filled)
    # The valid values are the ones up to the largest finite number, before the +inf of the missing.
    whole = SortedColumns(ordered, torch.full((ordered.shape[0],), ordered.shape[1], device=ordered.device))
    largest = torch.full(
        (ordered.shape[0], 1), torch.finfo(ordered.dtype).max, dtype=ordered.dtype, device=ordered.device
    )
    return SortedColumns(ordered, counts_at_most(whole, largest)[:, 0], at_float32)


def quantile_bin_counts(columns: SortedColumns, edges: Tensor) -> Tensor:
    """Values per bin (-inf, e0], (e0, e1], ..., (e_last, inf); `edges` (features, E) ascending, +inf as padding."""
    return _bins(columns, as_thresholds(edges, columns, strict=False))


def histogram_counts(columns: SortedColumns, edges: Tensor) -> Tensor:
    """Values per bin (-inf, e0), [e0, e1), ..., [e_last-1, e_last], (e_last, inf): numpy.histogram's bins, framed.

    `edges` (features, E) ascending; the result has E + 1 bins, the first and last for values outside.
    """
    below = as_thresholds(edges[:, :-1], columns, strict=True)
    last = as_thresholds(edges[:, -1:], columns, strict=False)
    return _bins(columns, torch.cat([below, last], dim=1))


def value_counts(columns: SortedColumns, levels: Tensor) -> Tensor:
    """Per feature, its values equal to each of `levels` (features, L) ascending, +inf as padding; then those
    equal to none: (features, L + 1).

    Compared as `as_thresholds` compares; levels it makes equal (two float64 values of one float32) count
    a value once, at the first of them.
    """
    at_most = counts_at_most(columns, as_thresholds(levels, columns, strict=False))
    below = counts_at_most(columns, as_thresholds(levels, columns, strict=True))
    before = torch.cat([torch.zeros_like(at_most[:, :1]), at_most[:, :-1]], dim=1)
    equal = at_most - torch.maximum(below, before)
    return torch.cat([equal, (columns.counts - equal.sum(dim=1)).unsqueeze(1)], dim=1)


def share(counts: Tensor, totals: Tensor) -> Tensor:
    """Counts (features, bins) as frequencies of their feature's total, float64 (NaN for a total of 0)."""
    return counts.to(torch.float64) / totals.to(torch.float64).unsqueeze(1)


def chunks(features: int, width: int) -> list[slice]:
    """Slices of `features` whose work arrays, `width` values per feature, stay near _CHUNK_ELEMENTS."""
    size = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return [slice(start, min(start + size, features)) for start in range(0, features, size)]


def _sorted_rows(values: Tensor) -> Tensor:
    if values.device.type == "cpu":
        # numpy's vectorised sort is ~20x faster than torch's on the CPU; values is ours to sort in place.
        values.numpy().sort(axis=1)
        return values
    return torch.sort(values, dim=1).values


def counts_at_most(columns: SortedColumns, thresholds: Tensor) -> Tensor:
    """Per feature, how many valid values are <= each threshold (features, queries), in the columns' dtype."""
    if columns.values.device.type == "cpu":
        # numpy's searchsorted walks sorted queries from the previous answer, torch's bisects each anew.
        values, queries = columns.values.numpy(), thresholds.contiguous().numpy()
        counts = np.empty(queries.shape, dtype=np.int64)
        for feature in range(queries.shape[0]):
            counts[feature] = np.searchsorted(values[feature], queries[feature], side="right")
        found = torch.from_numpy(counts)
    else:
        found = torch.searchsorted(columns.values, thresholds.contiguous(), right=True)
    return torch.minimum(found, columns.counts.unsqueeze(1))


def counts_below(columns: SortedColumns, at_most: Tensor, strict: Tensor) -> Tensor:
    """Counts of values <= `strict`, from the counts `at_most` of values <= thresholds just above them.

    They differ only where a value lies between the two, a tie with the reference value: only
    those queries are searched again.
    """
    largest = columns.values.gather(1, (at_most - 1).clamp(min=0))
    tied = (at_most > 0) & (largest > strict)
    below = at_most.clone()
    for feature in tied.any(dim=1).nonzero().flatten().tolist():
        queries = tied[feature].nonzero().flatten()
        row = SortedColumns(columns.values[feature : feature + 1], columns.counts[feature : feature + 1])
        below[feature, queries] = counts_at_most(row, strict[feature, queries].unsqueeze(0))[0]
    return below


def _bins(columns: SortedColumns, thresholds: Tensor) -> Tensor:
    cumulative = counts_at_most(columns, thresholds)
    zero = torch.zeros_like(cumulative[:, :1])
    return torch.diff(cumulative, dim=1, prepend=zero, append=columns.counts.unsqueeze(1))


def as_thresholds(values: Tensor, columns: SortedColumns, *, strict: bool) -> Tensor:
    """Thresholds t of the columns' dtype such that for every value x of theirs: x <= t exactly when x < v
    (strict) or x <= v, for each v of `values` (features, queries); v rounded to float32 first for the
    features the columns mark `at_float32`."""
    dtype = columns.values.dtype
    wide = values.to(torch.float64)
    if columns.at_float32 is not None:
        wide = torch.where(columns.at_float32.unsqueeze(1), on_float32_grid(wide), wide)
    rounded = wide.to(dtype)
    too_high = rounded.to(torch.float64) >= wide if strict else rounded.to(torch.float64) > wide
    down = torch.nextafter(rounded, torch.full_like(rounded, -math.inf))
    return torch.where(too_high, down, rounded)


def float32_data(data: Tensor) -> Tensor:
    """Per feature of `data` (rows, features), whether each of its finite values is a float32 (always, at float32)."""
    if data.dtype == torch.float32:
        return torch.ones(data.shape[1], dtype=torch.bool, device=data.device)
    return ((on_float32_grid(data) == data) | ~torch.isfinite(data)).all(dim=0)


def on_float32_grid(values: Tensor) -> Tensor:
    """`values` rounded to the nearest float32, in their own dtype; NaN, ±inf and values beyond float32's
    range (which would round to ±inf, and are no float32 either way) as they are."""
    within = values.abs() <= _FLOAT32_MAX
    return torch.where(within, values.to(torch.float32).to(values.dtype), values)
