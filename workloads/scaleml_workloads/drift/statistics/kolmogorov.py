"""The null distributions of the Kolmogorov-Smirnov statistic, for the p-values of `two_sample.ks_p_value`.

`exact_sf`: of the two-sample statistic, exactly, by counting lattice paths (samples up to
`two_sample.EXACT_KS_MAX_SIZE` values); `one_sample_sf`: of the one-sample statistic, which SciPy
uses for larger samples. Scalar recursions in float64 on numpy arrays, as SciPy computes them.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import numpy as np
import numpy.typing as npt
import torch

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# Exact two-sample p-values: lattice paths leave a band this many asymptotic standard deviations
# wide with a probability below 1e-17, so the recursion never looks past it (see exact_sf).
_BAND_LIMIT_Z: Final = 4.5


# Exact p-values of the two-sample statistic.


def exact_sf(d: Floats, n1: Ints, n2: Ints) -> Floats:
    """P(D >= d) of the two-sample statistic per feature, samples of n1 and n2 values (ks_2samp's exact method)."""
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
    the band exact_sf allows, which float64 holds (a scale by the row's largest count, far above
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


def one_sample_sf(n: int, d: float) -> float:
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
