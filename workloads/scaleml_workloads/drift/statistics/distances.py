"""Distances between the two samples of each feature, without p-values: drift is a distance past a threshold.

- `wasserstein`: `scipy.stats.wasserstein_distance`, on the raw values of sorted columns;
- `population_stability_index`: the PSI, on frequencies per bin;
- `jensen_shannon`: `scipy.spatial.distance.jensenshannon(p, q, base=2)`, on frequencies per bin.
"""

from __future__ import annotations

import math
from typing import Final

import torch
from torch import Tensor

from scaleml_workloads.drift.statistics.columns import SortedColumns, chunks

# The frequency an empty bin gets in the PSI, whose terms take log(q / p): small enough not to
# matter next to any observed frequency of a window, large enough to keep one empty bin from
# dominating the sum.
PSI_EPSILON: Final = 1e-4


def wasserstein(reference: SortedColumns, current: SortedColumns) -> Tensor:
    """Wasserstein-1 distance between the two empirical distributions, per feature (float64, the features' units).

    Computed as the integral over u in (0, 1) of |Q1(u) - Q2(u)| with the empirical quantile
    functions, which are constant between the levels i / n1 and j / n2: the levels are merged in
    integer arithmetic, once for all the features with the same pair of sizes, so the combined
    sample is never sorted.
    """
    distance = torch.full((reference.features,), math.nan, dtype=torch.float64, device=reference.values.device)
    sizes = torch.stack([reference.counts, current.counts], dim=1).tolist()
    for n1, n2 in {tuple(pair) for pair in sizes if min(pair) > 0}:
        group = torch.tensor([f for f, pair in enumerate(sizes) if pair == [n1, n2]], device=distance.device)
        at_1, at_2, steps = _merged_levels(n1, n2, distance.device)
        weights = steps.to(torch.float64) / (n1 * n2)
        for chunk in chunks(len(group), len(steps)):
            rows = group[chunk]
            quantile_1 = reference.values[rows.unsqueeze(1), at_1].to(torch.float64)
            quantile_2 = current.values[rows.unsqueeze(1), at_2].to(torch.float64)
            distance[rows] = torch.abs(quantile_1 - quantile_2) @ weights
    return distance


def _merged_levels(n1: int, n2: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The levels i / n1 and j / n2 merged in order: for each step between consecutive levels, the
    order statistic of each sample in force there and the step's length as a numerator over n1 * n2."""
    i = torch.arange(1, n1 + 1, device=device)
    j = torch.arange(1, n2 + 1, device=device)
    # Below i / n1 lie floor((i n2 - 1) / n1) levels j / n2; at or below j / n2 lie floor(j n1 / n2)
    # levels i / n1. Ties end up side by side, making a step of length zero.
    levels = torch.empty(n1 + n2, dtype=torch.int64, device=device)
    levels[i - 1 + (i * n2 - 1) // n1] = i * n2
    levels[j - 1 + (j * n1) // n2] = j * n1
    steps = torch.diff(levels, prepend=levels.new_zeros(1))
    return (levels + n2 - 1) // n2 - 1, (levels + n1 - 1) // n1 - 1, steps


def population_stability_index(
    reference_frequencies: Tensor, current_frequencies: Tensor, epsilon: float = PSI_EPSILON
) -> Tensor:
    """Sum over bins of (q - p) ln(q / p), frequencies (features, bins); empty bins count as `epsilon`."""
    p = reference_frequencies.to(torch.float64).clamp(min=epsilon)
    q = current_frequencies.to(torch.float64).clamp(min=epsilon)
    return ((q - p) * torch.log(q / p)).sum(dim=-1)


def jensen_shannon(reference_frequencies: Tensor, current_frequencies: Tensor) -> Tensor:
    """Jensen-Shannon distance, base 2 (in [0, 1]), between the rows of two (features, bins) tensors, normalised."""
    p = reference_frequencies.to(torch.float64)
    q = current_frequencies.to(torch.float64)
    p = p / p.sum(dim=-1, keepdim=True)
    q = q / q.sum(dim=-1, keepdim=True)
    middle = (p + q) / 2

    def relative_entropy(x: Tensor) -> Tensor:
        return torch.where(x > 0, x * torch.log(x / middle), 0.0).sum(dim=-1)

    divergence = (relative_entropy(p) + relative_entropy(q)) / (2 * math.log(2))
    return torch.sqrt(divergence.clamp(min=0.0))
