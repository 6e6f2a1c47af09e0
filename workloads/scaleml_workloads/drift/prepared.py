"""The reference side of the drift tests, prepared once on the device when the detector is built.

Numeric features (`PreparedNumeric`): how to read them from a window, their raw values (sorted,
and as rows for the multivariate test), standard deviations, the reference's deciles with its
frequencies in those bins, and its histograms framed by one bin below and one above.
Categorical features (`PreparedCategorical`): a lookup from category code to bin, the reference's
counts per bin and the bins' labels, the listed categories and `UNSEEN`, and what its counts say
of the categories it did not see (`Unseen`, which the nulls of the distances draw from).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from scaleml_api.profile import FeatureProfile, Histogram, NumericSummary
from scaleml_workloads.drift.nulls import Unseen
from scaleml_workloads.drift.reference import Reference
from scaleml_workloads.drift.statistics import (
    SortedColumns,
    float32_data,
    quantile_bin_counts,
    share,
    sort_columns,
)
from scaleml_workloads.drift.window import Read, plan_reads

UNSEEN: Final = "(unseen)"
# A numeric feature whose reference sample takes at most this many distinct values is tested by `ks` on its
# counts of each value (see registry.numeric_ks). Kolmogorov-Smirnov's null assumes no ties: with few values
# it is very conservative (5,000 reference rows against 2,000: 0 to 1.7% of p-values below 0.05 for 2 to
# 10 values, 1.3% at 20) and misses changes (a 0/1 flag from 2% to 4%: median p 0.67). Chi-square on the
# counts holds its rate (3 to 6%); against a shift of a tenth of a standard deviation of a discretised
# normal, it found more than KS up to 5 values (62% against 35%), about as many at 10 (47% against 52%),
# and fewer from there on (37% against 60% at 20), where KS's order of the values counts for more.
FEW_VALUES: Final = 10
_DECILES: Final = np.linspace(0.1, 0.9, 9)


@dataclass(frozen=True)
class PreparedNumeric:
    """The reference side of the numeric features, on the device."""

    features: list[FeatureProfile]  # in the order `reads` reads them
    reads: list[Read]  # how to read them from the input, in order
    values: Tensor  # (rows, features) raw values, for the multivariate test
    sorted: SortedColumns
    float32: Tensor  # (features,) bool: every raw value is a float32 (see detector._at_one_precision)
    # (features, FEW_VALUES): the distinct raw values of the features that have at most FEW_VALUES of them
    # (`few_values`), ascending, +inf after them and for the other features.
    levels: Tensor
    few_values: Tensor  # (features,) bool
    std: Tensor  # (features,) float64, NaN without values
    psi_edges: Tensor  # (features, 9) deciles, duplicates as +inf
    psi_reference: Tensor  # (features, 10) frequencies of the raw values in those bins
    # Histograms grouped by their number of edges: feature positions, edges, reference frequencies.
    histograms: list[tuple[Tensor, Tensor, Tensor]]
    labels: list[list[str]]


@dataclass(frozen=True)
class PreparedCategorical:
    """The reference side of one categorical feature."""

    feature: FeatureProfile
    lookup: Tensor  # code -> bin; codes past its end are unseen
    reference_counts: Tensor  # (bins,) float64, the last for unseen
    labels: list[str]
    unseen: Unseen


def prepare_numeric(reference: Reference, readable: list[FeatureProfile], device: torch.device) -> PreparedNumeric:
    features, reads = plan_reads(readable, reference.input.dims, device)
    rows = reference.rows
    columns = [reference.values.get(feature.name, np.full(rows, np.nan)) for feature in features]
    values = torch.from_numpy(np.stack(columns) if columns else np.empty((0, rows))).to(device).t()
    ordered = sort_columns(values)
    summaries = [feature.numeric for feature in features]
    std = torch.tensor([s.std if s else math.nan for s in summaries], dtype=torch.float64, device=device)
    psi_edges = torch.from_numpy(_decile_edges(summaries)).to(device)
    psi_reference = share(quantile_bin_counts(ordered, psi_edges), ordered.counts)
    labels = [_histogram_labels(summary.histogram.edges) if summary else [] for summary in summaries]
    histograms = _histograms(summaries, device)
    levels, few_values = _levels(ordered)
    return PreparedNumeric(
        features,
        reads,
        values,
        ordered,
        float32_data(values),
        levels,
        few_values,
        std,
        psi_edges,
        psi_reference,
        histograms,
        labels,
    )


def prepare_categorical(feature: FeatureProfile, device: torch.device) -> PreparedCategorical:
    summary = feature.categorical
    categories = summary.categories if summary else []
    lookup = np.full(max((c.code for c in categories), default=-1) + 1, len(categories), dtype=np.int64)
    for position, category in enumerate(categories):
        lookup[category.code] = position
    listed = np.array([c.count for c in categories], dtype=np.float64)
    other = float(summary.other_count if summary else 0)
    return PreparedCategorical(
        feature,
        torch.from_numpy(lookup).to(device),
        torch.from_numpy(np.append(listed, other)).to(device),
        [c.value for c in categories] + [UNSEEN],
        # Listed whole: no observation was left out of the list.
        Unseen.of(listed, complete=other == 0),
    )


def _levels(ordered: SortedColumns) -> tuple[Tensor, Tensor]:
    """The distinct values of the features with 1 to FEW_VALUES of them, +inf as padding; which features those are."""
    values = ordered.values
    valid = torch.arange(values.shape[1], device=values.device).unsqueeze(0) < ordered.counts.unsqueeze(1)
    new = torch.ones_like(valid)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    distinct = (new & valid).sum(dim=1)
    few_values = (distinct >= 1) & (distinct <= FEW_VALUES)
    levels = torch.full((values.shape[0], FEW_VALUES), math.inf, dtype=torch.float64, device=values.device)
    for feature in few_values.nonzero().flatten().tolist():
        found = values[feature][new[feature] & valid[feature]].to(torch.float64)
        levels[feature, : len(found)] = found
    return levels, few_values


def _histograms(summaries: list[NumericSummary | None], device: torch.device) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The reference histograms by number of edges: positions, edges, frequencies framed by two empty bins."""
    groups: dict[int, list[tuple[int, Histogram]]] = {}
    for position, summary in enumerate(summaries):
        if summary is not None:
            groups.setdefault(len(summary.histogram.edges), []).append((position, summary.histogram))
    histograms = []
    for group in groups.values():
        counts = np.array([[0, *histogram.counts, 0] for _, histogram in group], dtype=np.float64)
        histograms.append(
            (
                torch.tensor([position for position, _ in group], device=device),
                torch.tensor([histogram.edges for _, histogram in group], dtype=torch.float64, device=device),
                torch.from_numpy(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).to(device),
            )
        )
    return histograms


def _decile_edges(summaries: list[NumericSummary | None]) -> npt.NDArray[np.float64]:
    """(features, 9): each reference's distinct deciles, +inf for the repeated ones and for features without values."""
    edges = np.full((len(summaries), len(_DECILES)), np.inf)
    for position, summary in enumerate(summaries):
        if summary is not None:
            deciles = np.unique(np.interp(_DECILES, summary.quantile_levels, summary.quantiles))
            edges[position, : len(deciles)] = deciles
    return edges


def _histogram_labels(edges: Sequence[float]) -> list[str]:
    inner = [f"[{low:.6g}, {high:.6g})" for low, high in itertools.pairwise(edges[:-1])]
    last = f"[{edges[-2]:.6g}, {edges[-1]:.6g}]"
    return [f"(-inf, {edges[0]:.6g})", *inner, last, f"({edges[-1]:.6g}, inf)"]
