"""Two-sample statistics of many features at once, on torch tensors (CPU or GPU).

Data come as columns of features: a tensor shaped (rows, features) in which every non-finite
value (NaN, +inf, -inf) is missing, so each feature may have its own number of values. Tests on
raw values read the columns sorted once (`sort_columns`); tests on bins read frequencies per bin
(`quantile_bin_counts`, `histogram_counts`, or category counts the caller makes).

The results are SciPy's:

- `ks_two_sample`: `scipy.stats.ks_2samp` (two-sided, method "auto": the exact distribution when
  neither sample has more than `EXACT_KS_MAX_SIZE` values, else the asymptotic one);
- `wasserstein`: `scipy.stats.wasserstein_distance`;
- `jensen_shannon`: `scipy.spatial.distance.jensenshannon(p, q, base=2)`;
- `chi_square`: `scipy.stats.chi2_contingency(table, correction=False)` on the 2 x K table of counts.

The p-values of the Kolmogorov-Smirnov test are scalar recursions: they are computed per feature,
in float64 on the CPU, from the statistics and the sample sizes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# ks_2samp's method="auto" uses the exact distribution when no sample is larger than this.
EXACT_KS_MAX_SIZE: Final = 10_000
# The frequency an empty bin gets in the PSI, whose terms take log(q / p): small enough not to
# matter next to any observed frequency of a window, large enough to keep one empty bin from
# dominating the sum.
PSI_EPSILON: Final = 1e-4
# Cochran's rule: the chi-square approximation needs an expected count of about 5 per cell.
MIN_EXPECTED_COUNT: Final = 5.0

# Work arrays of (features, values) are cut into chunks of about this many elements.
_CHUNK_ELEMENTS: Final = 1 << 24
# Exact two-sample p-values: lattice paths leave a band this many asymptotic standard deviations
# wide with a probability below 1e-17, so the recursion never looks past it (see _exact_sf).
_BAND_LIMIT_Z: Final = 4.5


@dataclass(frozen=True)
class SortedColumns:
    """Columns sorted ascending, each with its missing values replaced by +inf and moved to its end."""

    values: Tensor  # (features, rows)
    counts: Tensor  # (features,) int64: the valid values at the start of each row

    @property
    def features(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class TwoSample:
    """One two-sample test per feature. NaN where a sample has no values."""

    statistic: Tensor  # (features,) float64
    p_value: Tensor  # (features,) float64


@dataclass(frozen=True)
class KernelTest:
    """The maximum mean discrepancy test of all features together."""

    statistic: float  # unbiased estimate of MMD squared
    p_value: float
    reference_rows: int
    current_rows: int


def sort_columns(data: Tensor) -> SortedColumns:
    """Each feature of `data` (rows, features) sorted, missing values last.

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
    return SortedColumns(ordered, _counts_at_most(whole, largest)[:, 0])


def quantile_bin_counts(columns: SortedColumns, edges: Tensor) -> Tensor:
    """Values per bin (-inf, e0], (e0, e1], ..., (e_last, inf); `edges` (features, E) ascending, +inf as padding."""
    return _bins(columns, _thresholds(edges, columns.values.dtype, strict=False))


def histogram_counts(columns: SortedColumns, edges: Tensor) -> Tensor:
    """Values per bin (-inf, e0), [e0, e1), ..., [e_last-1, e_last], (e_last, inf): numpy.histogram's bins, framed.

    `edges` (features, E) ascending; the result has E + 1 bins, the first and last for values outside.
    """
    below = _thresholds(edges[:, :-1], columns.values.dtype, strict=True)
    last = _thresholds(edges[:, -1:], columns.values.dtype, strict=False)
    return _bins(columns, torch.cat([below, last], dim=1))


def ks_statistic(reference: SortedColumns, current: SortedColumns) -> Tensor:
    """The largest distance between the two empirical distribution functions, per feature (float64)."""
    n1 = reference.counts.to(torch.float64).unsqueeze(1)
    n2 = current.counts.to(torch.float64).unsqueeze(1)
    statistic = torch.zeros(reference.features, dtype=torch.float64, device=reference.values.device)
    for chunk in _chunks(reference.features, reference.values.shape[1]):
        ref = SortedColumns(reference.values[chunk], reference.counts[chunk])
        cur = SortedColumns(current.values[chunk], current.counts[chunk])
        # The difference F1 - F2 is extreme at the data points: at each reference value, the
        # reference's distribution function against the current's there, and just below it
        # against the current's at its largest value under it. Evaluated at every position of a
        # tied reference value, the positions before the last of the tie give smaller differences.
        counts_at_most = _counts_at_most(cur, _thresholds(ref.values, cur.values.dtype, strict=False))
        below = _counts_below(cur, counts_at_most, _thresholds(ref.values, cur.values.dtype, strict=True))
        at_most, below = counts_at_most.to(torch.float64), below.to(torch.float64)
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
    the distribution of the one-sample statistic for round(n1 * n2 / (n1 + n2)) values, as SciPy.
    """
    d = statistic.detach().to("cpu", torch.float64).numpy()
    n1 = n_reference.detach().to("cpu", torch.int64).numpy()
    n2 = n_current.detach().to("cpu", torch.int64).numpy()
    p_value = np.full(d.shape, math.nan)
    usable = (n1 > 0) & (n2 > 0) & np.isfinite(d)
    exact = usable & (np.maximum(n1, n2) <= EXACT_KS_MAX_SIZE)
    if exact.any():
        p_value[exact] = _exact_sf(d[exact], n1[exact], n2[exact])
    for feature in np.flatnonzero(usable & ~exact):
        small, large = sorted((float(n1[feature]), float(n2[feature])))
        p_value[feature] = _one_sample_sf(round(large * small / (large + small)), float(d[feature]))
    return torch.from_numpy(np.clip(p_value, 0.0, 1.0))


def ks_two_sample(reference: SortedColumns, current: SortedColumns) -> TwoSample:
    """The two-sample Kolmogorov-Smirnov test per feature."""
    statistic = ks_statistic(reference, current)
    p_value = ks_p_value(statistic, reference.counts, current.counts).to(statistic.device)
    return TwoSample(statistic, p_value)


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
        for chunk in _chunks(len(group), len(steps)):
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


def mmd_test(
    reference: Tensor, current: Tensor, *, max_rows: int, permutations: int, generator: torch.Generator
) -> KernelTest:
    """Maximum mean discrepancy between two samples of rows (rows, features), with a permutation p-value.

    Rows with a missing value are left out; each sample is then subsampled to at most `max_rows`
    rows and both are standardised with the reference's mean and standard deviation. The kernel
    is exp(-|x - y|^2 / (2 s^2)) with s^2 the median squared distance between the pooled rows
    (the median heuristic). The statistic is the unbiased estimate of MMD^2; the p-value is
    (1 + permutations at least as large) / (1 + permutations), the permutations drawn from `generator`.
    Raises ValueError when a sample has fewer than two complete rows.
    """
    x = _subsample(reference[torch.isfinite(reference).all(dim=1)], max_rows, generator).to(torch.float64)
    y = _subsample(current[torch.isfinite(current).all(dim=1)], max_rows, generator).to(torch.float64)
    n, m = x.shape[0], y.shape[0]
    if min(n, m) < 2:
        raise ValueError(f"the maximum mean discrepancy needs two complete rows per sample, not {n} and {m}")
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, 1.0)
    pooled = (torch.cat([x, y]) - mean) / std
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
    return KernelTest(float(mmd2[0]), (1 + exceed) / (1 + permutations), n, m)


def _subsample(rows: Tensor, max_rows: int, generator: torch.Generator) -> Tensor:
    if rows.shape[0] <= max_rows:
        return rows
    keep = torch.randperm(rows.shape[0], generator=generator, device=rows.device)[:max_rows]
    return rows[keep]


def _chunks(features: int, width: int) -> list[slice]:
    size = max(1, _CHUNK_ELEMENTS // max(width, 1))
    return [slice(start, min(start + size, features)) for start in range(0, features, size)]


def _sorted_rows(values: Tensor) -> Tensor:
    if values.device.type == "cpu":
        # numpy's vectorised sort is ~20x faster than torch's on the CPU; values is ours to sort in place.
        values.numpy().sort(axis=1)
        return values
    return torch.sort(values, dim=1).values


def _counts_at_most(columns: SortedColumns, thresholds: Tensor) -> Tensor:
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


def _counts_below(columns: SortedColumns, at_most: Tensor, strict: Tensor) -> Tensor:
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
        below[feature, queries] = _counts_at_most(row, strict[feature, queries].unsqueeze(0))[0]
    return below


def _bins(columns: SortedColumns, thresholds: Tensor) -> Tensor:
    cumulative = _counts_at_most(columns, thresholds)
    zero = torch.zeros_like(cumulative[:, :1])
    return torch.diff(cumulative, dim=1, prepend=zero, append=columns.counts.unsqueeze(1))


def _thresholds(values: Tensor, dtype: torch.dtype, *, strict: bool) -> Tensor:
    """Thresholds t of `dtype` such that for every x of `dtype`: x <= t exactly when x < v (strict) or x <= v."""
    wide = values.to(torch.float64)
    rounded = wide.to(dtype)
    too_high = rounded.to(torch.float64) >= wide if strict else rounded.to(torch.float64) > wide
    down = torch.nextafter(rounded, torch.full_like(rounded, -math.inf))
    return torch.where(too_high, down, rounded)


# Exact p-values of the two-sample statistic.


def _exact_sf(d: Floats, n1: Ints, n2: Ints) -> Floats:
    g = np.gcd(n1, n2)
    lcm = n1 // g * n2
    # ks_2samp rounds the statistic to the lattice of possible values, multiples of 1 / lcm.
    h = np.rint(d * lcm).astype(np.int64)
    p_value = np.ones(d.shape)
    equal = (n1 == n2) & (h > 0)
    if equal.any():
        p_value[equal] = _equal_sizes_sf(n1[equal], h[equal])
    unequal = (n1 != n2) & (h > 0)
    if unequal.any():
        small, large = np.minimum(n1, n2)[unequal], np.maximum(n1, n2)[unequal]
        # Paths reaching beyond _BAND_LIMIT_Z standard deviations are too rare to count: a wider
        # band is cut there, which changes the p-value by less than 1e-17 and keeps the counts
        # within float64's range (see _inside_share).
        limit = np.ceil(_BAND_LIMIT_Z / np.sqrt(small * large / (small + large)) * lcm[unequal]).astype(np.int64)
        p_value[unequal] = _outside_probability(small, large, np.minimum(h[unequal], limit))
    return p_value


def _equal_sizes_sf(n: Ints, h: Ints) -> Floats:
    """P(D >= h / n) for two samples of n: 2 sum_k (-1)^(k+1) C(2n, n - kh) / C(2n, n) (Gnedenko and Korolyuk)."""
    k = np.arange(1, int((n // h).max()) + 1)
    kh = k[None, :] * h[:, None]
    valid = kh <= n[:, None]
    log_ratio = (
        2 * _log_factorial(n)[:, None]
        - _log_factorial(n[:, None] - np.where(valid, kh, 0))
        - _log_factorial(n[:, None] + kh)
    )
    signs = np.where(k % 2 == 1, 1.0, -1.0)
    return np.asarray(2 * np.where(valid, signs * np.exp(log_ratio), 0.0).sum(axis=1))


def _outside_probability(small: Ints, large: Ints, h: Ints) -> Floats:
    """P(D >= h / lcm): the share of lattice paths (0, 0) -> (small, large) that touch |x large - y small| >= h gcd.

    Counts the paths that stay inside, row by row, and batches features of similar band widths.
    """
    outside = np.empty(small.shape)
    widths = 2 * h * np.gcd(small, large) // small + 1
    order = np.argsort(widths, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and widths[order[stop]] <= 2 * widths[order[start]] + 64:
            stop += 1
        batch = order[start:stop]
        outside[batch] = 1.0 - _inside_share(small[batch], large[batch], h[batch])
        start = stop
    return np.clip(outside, 0.0, 1.0)


def _inside_share(p: Ints, q: Ints, h: Ints) -> Floats:
    """The share of lattice paths (0, 0) -> (p, q), steps +1 in x or y, with |a x - b y| < h all along.

    Here a = q / g, b = p / g and g = gcd(p, q). Row x holds the points y in [lo(x), hi(x)]; the
    paths reaching (x, y) inside are the sum of those reaching (x - 1, y') inside for y' from
    lo(x) to y, a cumulative sum. Each row is kept as offsets from its lo, zero past its end, and
    scaled now and then by its count on the diagonal y = x q / p: the counts above the diagonal
    outgrow it, those below fall behind, both by at most e^(4.5 sqrt(p q / (p + q)) ln 2) within
    the band _exact_sf allows, which float64 holds (a scale by the row's largest count, far above
    the diagonal, would flush counts that matter to zero).
    """
    g = np.gcd(p, q)
    a, b = (q // g)[:, None], (p // g)[:, None]
    x = np.minimum(np.arange(int(p.max()) + 1)[None, :], p[:, None])
    lo = np.maximum(0, (a * x - h[:, None]) // b + 1)
    hi = np.minimum(q[:, None], (a * x + h[:, None] - 1) // b)
    width = hi - lo + 1
    diagonal = np.clip((x * q[:, None] + p[:, None] // 2) // p[:, None] - lo, 0, np.maximum(width - 1, 0))
    shifts = np.diff(lo, axis=1)
    span = int(width.max())
    offsets = np.arange(span)[None, :]
    features = np.arange(len(p))
    # One zero column past the widest row: where a row's shifted read runs off its end.
    band = np.zeros((len(p), span + 1))
    band[:, :span] = offsets < width[:, :1]
    starts = (features * (span + 1))[:, None]
    log_scale = np.zeros(len(p))
    log_paths = np.full(len(p), -np.inf)
    finishing = {int(last): np.flatnonzero(p == last) for last in np.unique(p)}
    for step in range(1, x.shape[1]):
        moved = band.take(starts + np.minimum(offsets + shifts[:, step - 1 : step], span))
        np.cumsum(moved, axis=1, out=band[:, :span])
        band[:, :span] *= offsets < width[:, step : step + 1]
        # A row grows at most span-fold (at most e^9 here), so every 8 rows keeps within float64's range.
        if step % 8 == 0:
            scale = band[features, diagonal[:, step]]
            scale[scale == 0] = 1.0
            band /= scale[:, None]
            log_scale += np.log(scale)
        # (p, q) is the last point of a feature's last row.
        done = finishing.get(step)
        if done is not None:
            with np.errstate(divide="ignore"):
                log_paths[done] = np.log(band[done, width[done, step] - 1]) + log_scale[done]
    return np.asarray(np.exp(log_paths - (_log_factorial(p + q) - _log_factorial(p) - _log_factorial(q))))


def _log_factorial(values: npt.NDArray[np.int64] | Floats) -> Floats:
    return np.asarray(torch.lgamma(torch.from_numpy(np.asarray(values, dtype=np.float64)) + 1).numpy())


# The distribution of the one-sample statistic D_n, by the methods and regions of Simard and
# L'Ecuyer, "Computing the two-sided Kolmogorov-Smirnov distribution" (J. Stat. Software 39(11), 2011).


def _one_sample_sf(n: int, d: float) -> float:
    """P(D_n >= d)."""
    if d >= 1.0:
        return 0.0
    t = n * d
    if t <= 0.5:
        return 1.0
    if t <= 1.0:
        # Ruben and Gambino: P(D_n < d) = n! / n^n (2t - 1)^n.
        return 1.0 - math.exp(math.lgamma(n + 1) - n * math.log(n) + n * math.log(2 * t - 1))
    if t >= n - 1:
        return 2 * (1.0 - d) ** n
    if d >= 0.5:
        # Beyond 1/2 the two one-sided events exclude each other.
        return 2 * _smirnov_sf(n, d)
    z2 = t * d
    if n <= 140:
        return 1.0 - _durbin_cdf(n, d) if z2 <= 4.0 else 2 * _smirnov_sf(n, d)
    if z2 >= 370.0:
        return 0.0
    if z2 >= 2.2:
        return 2 * _smirnov_sf(n, d)
    if n <= 100_000 and n * d**1.5 <= 1.4:
        return 1.0 - _durbin_cdf(n, d)
    return 1.0 - _pelz_good_cdf(n, d)


def _smirnov_sf(n: int, d: float) -> float:
    """P(D+_n >= d), exactly (Birnbaum and Tingey, 1951)."""
    j = np.arange(math.floor(n * (1.0 - d)) + 1)
    base = 1.0 - d - j / n
    j, base = j[base > 0], base[base > 0]
    log_factorial = _log_factorials(n)
    log_binomial = log_factorial[n] - log_factorial[j] - log_factorial[n - j]
    log_terms = log_binomial + (n - j) * np.log(base) + (j - 1) * np.log(d + j / n)
    return d * float(np.exp(log_terms).sum())


@functools.lru_cache(maxsize=4)
def _log_factorials(n: int) -> Floats:
    """log k! for k = 0..n; the features of one window share their n."""
    return _log_factorial(np.arange(n + 1))


def _durbin_cdf(n: int, d: float) -> float:
    """P(D_n < d) by Durbin's matrix (Marsaglia, Tsang and Wang, J. Stat. Software 8(18), 2003).

    With k = floor(nd) + 1, h = k - nd and m = 2k - 1: P = n! / n^n (H^n)[k-1, k-1] for the m x m
    matrix H[i, j] = 1 / (i - j + 1)! where i - j + 1 >= 0, its first column and last row
    corrected by powers of h. The power is taken by squaring, each product scaled by its largest entry.
    """
    k = math.floor(n * d) + 1
    m = 2 * k - 1
    h = k - n * d
    order = np.arange(m)[:, None] - np.arange(m)[None, :] + 1
    inverse_factorials = np.concatenate([[1.0], np.cumprod(1.0 / np.arange(1, m + 1))])
    matrix = np.where(order >= 0, 1.0, 0.0)
    powers = h ** np.arange(1, m + 1)
    matrix[:, 0] -= powers
    matrix[m - 1, :] -= powers[::-1]
    if 2 * h - 1 > 0:
        matrix[m - 1, 0] += (2 * h - 1) ** m
    matrix *= np.where(order >= 0, inverse_factorials[np.clip(order, 0, m)], 0.0)
    result, result_log = np.eye(m), 0.0
    base, base_log = matrix, 0.0
    exponent = n
    while exponent:
        if exponent & 1:
            result = result @ base
            scale = float(np.abs(result).max())
            result, result_log = result / scale, result_log + base_log + math.log(scale)
        exponent >>= 1
        if exponent:
            base = base @ base
            scale = float(np.abs(base).max())
            base, base_log = base / scale, 2 * base_log + math.log(scale)
    entry = float(result[k - 1, k - 1])
    if entry <= 0:
        return 0.0
    return math.exp(math.log(entry) + result_log + math.lgamma(n + 1) - n * math.log(n))


def _pelz_good_cdf(n: int, d: float) -> float:
    """P(D_n <= d) ~ K0(z) + K1(z)/sqrt(n) + K2(z)/n + K3(z)/n^1.5 with z = d sqrt(n).

    Pelz and Good, JRSS B 38(2), 1976, in the form Simard and L'Ecuyer give.
    """
    z = d * math.sqrt(n)
    if math.pi**2 / (8 * z * z) > 708:
        return 0.0
    k = np.arange(1, math.ceil(16 * z / math.pi) + 1, dtype=np.float64)
    odd2 = (2 * k - 1) ** 2
    pi2 = math.pi**2
    z2, z4, z6 = z**2, z**4, z**6
    decay_odd = np.exp(-odd2 * pi2 / (8 * z2))
    decay_all = np.exp(-(k**2) * pi2 / (2 * z2))
    root = math.sqrt(2 * math.pi)
    k0 = root / z * decay_odd.sum()
    k1 = root / (6 * z4) * ((pi2 * odd2 / 4 - z2) * decay_odd).sum()
    k2_odd = 6 * z6 + 2 * z4 + (2 * z4 - 5 * z2) * pi2 * odd2 / 4 + pi2**2 * (1 - 2 * z2) * odd2**2 / 16
    k2 = root / (72 * z**7) * (k2_odd * decay_odd).sum() - pi2 * root / (36 * z**3) * (k**2 * decay_all).sum()
    k3_odd = (
        -30 * z6
        - 90 * z**8
        + pi2 * (135 * z4 - 96 * z6) * odd2 / 4
        + pi2**2 * (212 * z4 - 60 * z2) * odd2**2 / 16
        + pi2**3 * (5 - 30 * z2) * odd2**3 / 64
    )
    k3 = (
        root / (6480 * z**10) * (k3_odd * decay_odd).sum()
        + pi2 * root / (216 * z6) * ((3 * z2 - pi2 * k**2) * k**2 * decay_all).sum()
    )
    return float(k0 + k1 / math.sqrt(n) + k2 / n + k3 / n**1.5)
