"""The multivariate test: the maximum mean discrepancy between two samples of rows, with a permutation p-value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
from torch import Tensor

# Standard deviations from the reference's mean beyond which a value counts as this far: the squared
# distances between rows stay finite (or +inf, never NaN), whatever the values.
FAR: Final = 1e150


@dataclass(frozen=True)
class KernelTest:
    """The maximum mean discrepancy test of all features together."""

    statistic: float  # unbiased estimate of MMD squared
    p_value: float
    # No permutation reached the statistic: the p-value is only known to be at most 1 / (1 + permutations).
    p_value_is_bound: bool
    reference_rows: int
    current_rows: int


def mmd_test(
    reference: Tensor, current: Tensor, *, max_rows: int, permutations: int, generator: torch.Generator
) -> KernelTest:
    """Maximum mean discrepancy between two samples of rows (rows, features), with a permutation p-value.

    Rows with a missing value are left out; each sample is then subsampled to at most `max_rows`
    rows and both are standardised with the reference's mean and standard deviation. The kernel
    is exp(-|x - y|^2 / (2 s^2)) with s^2 the median squared distance between the pooled rows
    (the median heuristic). The statistic is the unbiased estimate of MMD^2; the p-value is
    (1 + permutations at least as large) / (1 + permutations), the permutations drawn from `generator`:
    never below 1 / (1 + permutations), which is then a bound (`p_value_is_bound`), not an estimate.
    Raises ValueError when a sample has fewer than two complete rows.
    """
    complete_reference = reference[torch.isfinite(reference).all(dim=1)]
    complete_current = current[torch.isfinite(current).all(dim=1)]
    # Counted before the subsampling: the rows the samples have, not the ones kept of them.
    if min(complete_reference.shape[0], complete_current.shape[0]) < 2:
        raise ValueError(
            "the maximum mean discrepancy needs two complete rows per sample, "
            f"not {complete_reference.shape[0]} and {complete_current.shape[0]}"
        )
    x = _subsample(complete_reference, max_rows, generator).to(torch.float64)
    y = _subsample(complete_current, max_rows, generator).to(torch.float64)
    n, m = x.shape[0], y.shape[0]
    # The standard deviation squares the values, which overflows near the largest float: scaled first by a
    # power of two to below 1 (exactly, and the standardised values are the same), they cannot.
    scale = torch.pow(2.0, -torch.frexp(x.abs().amax(dim=0)).exponent.clamp(min=0).to(torch.float64))
    x, y = x * scale, y * scale
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, 1.0)
    # A window's value may still be far beyond the reference's: standardised, it can overflow to inf, and
    # inf - inf in the distances is NaN, which no permutation exceeds (a NaN statistic with the least p-value).
    # Clamped to FAR standard deviations, such a row is as far from all others as any: its kernel is 0.
    pooled = ((torch.cat([x, y]) - mean) / std).clamp(min=-FAR, max=FAR)
    squared = torch.cdist(pooled, pooled, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    upper = torch.triu_indices(n + m, n + m, offset=1, device=pooled.device)
    bandwidth = float(squared[upper[0], upper[1]].median()) or 1.0
    kernel = torch.exp(-squared / (2 * bandwidth))
    # Row 0 is the observed split; the others are permutations of the pooled rows.
    draws = torch.rand(permutations, n + m, generator=generator, device=pooled.device).argsort(dim=1)
    member = torch.zeros(permutations + 1, n + m, dtype=torch.float64, device=pooled.device)
    member[0, :n] = 1.0
    member[1:].scatter_(1, draws[:, :n], 1.0)
    to_first = member @ kernel  # (splits, rows): each row's kernel sum over the first sample
    within_first = (to_first * member).sum(dim=1) - n
    across = ((kernel.sum(dim=1) - to_first) * member).sum(dim=1)
    within_second = kernel.sum() - (within_first + n) - 2 * across - m
    mmd2 = within_first / (n * (n - 1)) + within_second / (m * (m - 1)) - 2 * across / (n * m)
    exceed = int((mmd2[1:] >= mmd2[0]).sum())
    return KernelTest(float(mmd2[0]), (1 + exceed) / (1 + permutations), exceed == 0, n, m)


def _subsample(rows: Tensor, max_rows: int, generator: torch.Generator) -> Tensor:
    if rows.shape[0] <= max_rows:
        return rows
    keep = torch.randperm(rows.shape[0], generator=generator, device=rows.device)[:max_rows]
    return rows[keep]
