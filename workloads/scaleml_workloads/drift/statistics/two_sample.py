"""The two-sample tests with p-values, per feature: Kolmogorov-Smirnov on raw values, chi-square on counts.

- `ks_two_sample`: `scipy.stats.ks_2samp` (two-sided, method "auto": the exact distribution when
  neither sample has more than `EXACT_KS_MAX_SIZE` values, else the asymptotic one, both in
  `kolmogorov`);
- `chi_square`: `scipy.stats.chi2_contingency(table, correction=False)` on the 2 x K table of
  counts, with `pool_rare` to gather the categories too rare for its approximation;
- `fisher_exact`: `scipy.stats.fisher_exact(table).pvalue` (two-sided) on 2 x 2 tables, for the
  ones too small for the chi-square approximation.

The p-values of the Kolmogorov-Smirnov test are scalar recursions: they are computed per feature,
in float64 on the CPU, from the statistics and the sample sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from torch import Tensor

from scaleml_workloads.drift.statistics.columns import (
    SortedColumns,
    as_thresholds,
    chunks,
    counts_at_most,
    counts_below,
)
from scaleml_workloads.drift.statistics.kolmogorov import exact_sf, one_sample_sf

# ks_2samp's method="auto" uses the exact distribution when no sample is larger than this.
EXACT_KS_MAX_SIZE: Final = 10_000
# Below this, an exact p-value of unequal sizes is replaced by the asymptotic one: the exact one is one less
# the share of paths that stay inside, a share good to about 1e-11 absolute next to 1 (its logarithm is one
# difference of two lattice-path counts of thousands of nats), so it cannot go below ~1e-12 and would
# print the same floor for every larger statistic; the asymptotic tail is good to a few percent there.
EXACT_TAIL: Final = 1e-7
# Cochran's rule: the chi-square approximation needs an expected count of about 5 per cell.
MIN_EXPECTED_COUNT: Final = 5.0
# Fisher's exact test counts a table as likely as the observed one within this relative tolerance.
_FISHER_TIES: Final = 1e-7


@dataclass(frozen=True)
class TwoSample:
    """One two-sample test per feature. NaN where a sample has no values."""

    statistic: Tensor  # (features,) float64
    p_value: Tensor  # (features,) float64


def ks_statistic(reference: SortedColumns, current: SortedColumns) -> Tensor:
    """The largest distance between the two empirical distribution functions, per feature (float64)."""
    n1 = reference.counts.to(torch.float64).unsqueeze(1)
    n2 = current.counts.to(torch.float64).unsqueeze(1)
    statistic = torch.zeros(reference.features, dtype=torch.float64, device=reference.values.device)
    for chunk in chunks(reference.features, reference.values.shape[1]):
        ref, cur = reference.take(chunk), current.take(chunk)
        # The difference F1 - F2 is extreme at the data points: at each reference value, the
        # reference's distribution function against the current's there, and just below it
        # against the current's at its largest value under it. Evaluated at every position of a
        # tied reference value, the positions before the last of the tie give smaller differences.
        up_to = counts_at_most(cur, as_thresholds(ref.values, cur, strict=False))
        below = counts_below(cur, up_to, as_thresholds(ref.values, cur, strict=True))
        at_most, below = up_to.to(torch.float64), below.to(torch.float64)
        position = torch.arange(1, ref.values.shape[1] + 1, dtype=torch.float64, device=ref.values.device)
        m1, m2 = n1[chunk], n2[chunk]
        # The same float64 operations as ks_2samp (count / n, then the difference), for the same roundings.
        above = position / m1 - at_most / m2
        under = below / m2 - (position - 1) / m1
        extreme = torch.maximum(above, under).masked_fill(position > m1, 0.0)
        statistic[chunk] = extreme.amax(dim=1).clamp(min=0.0)
    empty = (reference.counts == 0) | (current.counts == 0)
    return statistic.masked_fill(empty, math.nan)


def ks_p_value(statistic: Tensor, n_reference: Tensor, n_current: Tensor) -> Tensor:
    """Two-sided p-values of Kolmogorov-Smirnov statistics, as ks_2samp's method="auto" (float64, on the CPU).

    Exact when neither sample has more than EXACT_KS_MAX_SIZE values: the share of the
    equally likely orderings of the two samples whose statistic is at least the observed one (a
    closed form for equal sizes, a recursion over lattice paths otherwise, good to about 1e-9
    absolute). Larger samples use
    the distribution of the one-sample statistic for round(n1 * n2 / (n1 + n2)) values, as SciPy,
    and so do exact p-values of unequal sizes below EXACT_TAIL (no floor: float64 down to its least number).
    """
    d = statistic.detach().to("cpu", torch.float64).numpy()
    n1 = n_reference.detach().to("cpu", torch.int64).numpy()
    n2 = n_current.detach().to("cpu", torch.int64).numpy()
    p_value = np.full(d.shape, math.nan)
    usable = (n1 > 0) & (n2 > 0) & np.isfinite(d)
    exact = usable & (np.maximum(n1, n2) <= EXACT_KS_MAX_SIZE)
    if exact.any():
        p_value[exact] = exact_sf(d[exact], n1[exact], n2[exact])
    tail = exact & (n1 != n2) & (p_value < EXACT_TAIL)
    for feature in np.flatnonzero(usable & (~exact | tail)):
        small, large = sorted((float(n1[feature]), float(n2[feature])))
        p_value[feature] = one_sample_sf(round(large * small / (large + small)), float(d[feature]))
    return torch.from_numpy(np.clip(p_value, 0.0, 1.0))


def ks_two_sample(reference: SortedColumns, current: SortedColumns) -> TwoSample:
    """The two-sample Kolmogorov-Smirnov test per feature."""
    statistic = ks_statistic(reference, current)
    p_value = ks_p_value(statistic, reference.counts, current.counts).to(statistic.device)
    return TwoSample(statistic, p_value)


def chi_square(reference_counts: Tensor, current_counts: Tensor) -> TwoSample:
    """Chi-square test of homogeneity of two samples of categories, counts (features, categories).

    Categories seen in neither sample do not count; the degrees of freedom are the categories
    seen, less one. No continuity correction.
    """
    observed = torch.stack([reference_counts, current_counts], dim=-2).to(torch.float64)
    column = observed.sum(dim=-2, keepdim=True)
    row = observed.sum(dim=-1, keepdim=True)
    total = row.sum(dim=-2, keepdim=True)
    expected = row * column / total.clamp(min=1.0)
    cells = torch.where(expected > 0, (observed - expected) ** 2 / expected, 0.0)
    statistic = cells.sum(dim=(-2, -1))
    dof = (column.squeeze(-2) > 0).sum(dim=-1) - 1
    empty = (row.squeeze(-1) == 0).any(dim=-1)
    p_value = chi2_sf(statistic, dof)
    return TwoSample(statistic.masked_fill(empty, math.nan), p_value.masked_fill(empty, math.nan))


def two_by_two(reference_counts: Tensor, current_counts: Tensor) -> TwoSample:
    """The chi-square test of 2 x 2 tables (features, 2), its p-value Fisher's exact one where the table
    has an expected count below MIN_EXPECTED_COUNT: there the approximation's p-values run small (a
    share of 2% missing values, windows of 20 rows, no change: 2.4% of them below 0.01)."""
    outcome = chi_square(reference_counts, current_counts)
    observed = torch.stack([reference_counts, current_counts], dim=-2).to(torch.float64)
    total = observed.sum(dim=(-2, -1))
    smallest = (observed.sum(dim=-1).amin(dim=-1) * observed.sum(dim=-2).amin(dim=-1)) / total.clamp(min=1.0)
    small = smallest < MIN_EXPECTED_COUNT
    p_value = outcome.p_value.clone()
    p_value[small] = fisher_exact(reference_counts[small], current_counts[small]).to(p_value.device)
    return TwoSample(outcome.statistic, p_value)


def fisher_exact(reference_counts: Tensor, current_counts: Tensor) -> Tensor:
    """Fisher's exact test of 2 x 2 tables, counts (features, 2): its two-sided p-value per feature.

    Given the margins, the current sample's count in the first column is hypergeometric; the
    p-value sums the probabilities of the tables no likelier than the one observed (relative
    tolerance 1e-7 for ties, as scipy has it). NaN where a sample is empty.
    """
    p_values = []
    for (a, b), (c, d) in zip(reference_counts.tolist(), current_counts.tolist(), strict=True):
        total, first, size = a + b + c + d, a + c, c + d
        if a + b <= 0 or size <= 0:
            p_values.append(math.nan)
            continue
        support = torch.arange(max(0.0, size - (total - first)), min(first, size) + 1, dtype=torch.float64)
        log_pmf = _log_choose(first, support) + _log_choose(total - first, size - support) - _log_choose(total, size)
        observed = _log_choose(first, c) + _log_choose(total - first, d) - _log_choose(total, size)
        likely_as_much = log_pmf <= observed + math.log1p(_FISHER_TIES)
        p_values.append(min(1.0, float(torch.exp(log_pmf[likely_as_much]).sum())))
    return torch.tensor(p_values, dtype=torch.float64, device=reference_counts.device)


def _log_choose(n: float, k: Tensor | float) -> Tensor:
    k = torch.as_tensor(k, dtype=torch.float64)
    return math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def chi2_sf(statistic: Tensor, dof: Tensor) -> Tensor:
    """Survival function of the chi-square distribution (1 for zero degrees of freedom)."""
    half = (dof.to(torch.float64) / 2).clamp(min=0.5)
    return torch.where(dof > 0, torch.special.gammaincc(half, statistic.to(torch.float64) / 2), 1.0)


def pool_rare(
    reference_counts: Tensor, current_counts: Tensor, min_expected: float = MIN_EXPECTED_COUNT
) -> tuple[Tensor, Tensor]:
    """The counts, the categories expected fewer than `min_expected` times in either sample moved into one more."""
    reference = reference_counts.to(torch.float64)
    current = current_counts.to(torch.float64)
    column = reference + current
    smaller = torch.minimum(reference.sum(dim=-1, keepdim=True), current.sum(dim=-1, keepdim=True))
    expected = smaller * column / column.sum(dim=-1, keepdim=True).clamp(min=1.0)
    rare = (expected < min_expected) & (column > 0)

    def pooled(counts: Tensor) -> Tensor:
        return torch.cat([counts.masked_fill(rare, 0.0), (counts * rare).sum(dim=-1, keepdim=True)], dim=-1)

    return pooled(reference), pooled(current)
