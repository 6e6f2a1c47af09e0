"""The drift statistics agree with SciPy's (and with direct implementations) on random data of many shapes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
import torch

# SciPy ships no type information.
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial.distance import jensenshannon  # type: ignore[import-untyped]

from scaleml_workloads.drift.statistics import (
    EXACT_KS_MAX_SIZE,
    PSI_EPSILON,
    KernelTest,
    chi2_sf,
    chi_square,
    fisher_exact,
    histogram_counts,
    jensen_shannon,
    ks_p_value,
    ks_two_sample,
    mmd_test,
    pool_rare,
    population_stability_index,
    quantile_bin_counts,
    sort_columns,
    two_by_two,
    value_counts,
    wasserstein,
)

Floats = npt.NDArray[np.float64]


def columns(samples: list[Floats]) -> torch.Tensor:
    """Samples of different sizes as the columns of one (rows, features) tensor, padded with NaN."""
    table = np.full((max(len(sample) for sample in samples), len(samples)), np.nan)
    for index, sample in enumerate(samples):
        table[: len(sample), index] = sample
    return torch.from_numpy(table)


def draw(rng: np.random.Generator, size: int, kind: str, shift: float = 0.0) -> Floats:
    if kind == "normal":
        return rng.normal(shift, 1.0, size)
    if kind == "ties":
        # Few distinct values: ties within and across the samples.
        return np.round(rng.normal(shift, 1.0, size) * 2)
    return rng.exponential(1.0 + shift, size)


# Sizes on both sides of EXACT_KS_MAX_SIZE: equal sizes (closed form), unequal ones (the lattice
# recursion), one tiny sample, and the asymptotic regime, where the one-sample distribution's
# methods change with round(n1 n2 / (n1 + n2)).
KS_SIZES = [
    (1, 1),
    (3, 8),
    (40, 40),
    (137, 59),
    (500, 500),
    (1000, 3000),
    (4990, 5000),
    (10_000, 10_000),
    (10_000, 9_999),
    (2, EXACT_KS_MAX_SIZE),
    (EXACT_KS_MAX_SIZE + 1, 60),
    (EXACT_KS_MAX_SIZE + 1, 300),
    (12_000, 5_000),
    (40_000, 30_000),
]


@pytest.mark.parametrize(("n1", "n2"), KS_SIZES)
@pytest.mark.parametrize("kind", ["normal", "ties", "exponential"])
def test_ks_equals_scipy(n1: int, n2: int, kind: str) -> None:
    rng = np.random.default_rng(n1 * 7919 + n2)
    # Per feature a different shift, from none to an obvious one: p-values from 1 down to 0.
    shifts = [0.0, 0.02, 0.1, 0.3, 2.0]
    reference = [draw(rng, n1, kind) for _ in shifts]
    current = [draw(rng, n2, kind, shift) for shift in shifts]
    result = ks_two_sample(sort_columns(columns(reference)), sort_columns(columns(current)))
    for feature, (x, y) in enumerate(zip(reference, current, strict=True)):
        expected = stats.ks_2samp(x, y)
        assert abs(float(result.statistic[feature]) - expected.statistic) <= 1e-9, feature
        assert abs(float(result.p_value[feature]) - expected.pvalue) <= 1e-6, feature


def test_ks_features_of_different_sizes_in_one_call() -> None:
    rng = np.random.default_rng(3)
    reference = [rng.normal(size=size) for size in (100, 5000, 20_000, 7)]
    current = [rng.normal(0.05, size=size) for size in (3000, 4999, 800, 12_000)]
    result = ks_two_sample(sort_columns(columns(reference)), sort_columns(columns(current)))
    for feature, (x, y) in enumerate(zip(reference, current, strict=True)):
        expected = stats.ks_2samp(x, y)
        assert abs(float(result.statistic[feature]) - expected.statistic) <= 1e-9
        assert abs(float(result.p_value[feature]) - expected.pvalue) <= 1e-6


@pytest.mark.parametrize("n", [1, 5, 60, 140, 141, 1000, 4762, 90_909, 100_001, 200_000])
def test_asymptotic_ks_p_values_equal_scipys(n: int) -> None:
    """Above EXACT_KS_MAX_SIZE ks_2samp takes kstwo.sf(d, round(n1 n2 / (n1 + n2))), over every method's region."""
    n1 = 2_000_000
    n2 = round(n * n1 / (n1 - n))
    effective = round(n1 * n2 / (n1 + n2))
    assert effective == n
    # Evenly over [0, 1], and over the values of n d^2 where the methods change (SciPy is slow there for large n).
    points = 200 if n <= 5000 else 12
    d = np.concatenate([np.linspace(0.0, 1.0, points), np.sqrt(np.linspace(0.01, 30, points) / n)])
    ours = ks_p_value(torch.from_numpy(d), torch.full(d.shape, n1), torch.full(d.shape, n2)).numpy()
    np.testing.assert_allclose(ours, stats.kstwo.sf(d, n), rtol=0, atol=1e-6)


def test_ks_of_a_missing_sample_is_nan() -> None:
    reference = columns([np.array([1.0, 2.0, 3.0]), np.array([np.nan, np.nan, np.nan])])
    current = columns([np.array([np.nan, np.inf]), np.array([1.0, 2.0])])
    result = ks_two_sample(sort_columns(reference), sort_columns(current))
    assert torch.isnan(result.statistic).all()
    assert torch.isnan(result.p_value).all()


def test_sort_columns_counts_only_finite_values() -> None:
    data = torch.tensor([[1.0, np.nan], [np.inf, 2.0], [-np.inf, 3.0], [0.5, np.nan]])
    ordered = sort_columns(data)
    assert ordered.counts.tolist() == [2, 2]
    assert ordered.values[0, :2].tolist() == [0.5, 1.0]
    assert ordered.values[1, :2].tolist() == [2.0, 3.0]


def test_float32_window_against_float64_reference_compares_exact_values() -> None:
    """A float32 window is compared with float64 reference values exactly, as if both were float64."""
    rng = np.random.default_rng(5)
    reference = rng.normal(size=3000)
    # Half the window values equal reference values rounded to float32, so ties with the reference are near misses.
    window = np.concatenate([reference[:1500].astype(np.float32), rng.normal(size=1500).astype(np.float32)])
    result = ks_two_sample(
        sort_columns(torch.from_numpy(reference[:, None])), sort_columns(torch.from_numpy(window[:, None]))
    )
    expected = stats.ks_2samp(reference, window.astype(np.float64))
    assert abs(float(result.statistic[0]) - expected.statistic) <= 1e-9
    assert abs(float(result.p_value[0]) - expected.pvalue) <= 1e-6


@pytest.mark.parametrize(("n1", "n2"), [(1, 1), (7, 3), (1000, 1000), (999, 4000), (20_000, 3_000)])
@pytest.mark.parametrize("kind", ["normal", "ties", "exponential"])
def test_wasserstein_equals_scipy(n1: int, n2: int, kind: str) -> None:
    rng = np.random.default_rng(n1 + 31 * n2)
    shifts = [0.0, 0.1, 1.0]
    reference = [draw(rng, n1, kind) for _ in shifts]
    current = [
        draw(rng, n2 - index, kind, shift) if n2 > index else draw(rng, n2, kind) for index, shift in enumerate(shifts)
    ]
    distance = wasserstein(sort_columns(columns(reference)), sort_columns(columns(current)))
    for feature, (x, y) in enumerate(zip(reference, current, strict=True)):
        assert float(distance[feature]) == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-9, abs=1e-12)


def test_quantile_bins_and_psi_equal_a_direct_computation() -> None:
    rng = np.random.default_rng(11)
    reference = [rng.normal(size=5000), np.round(rng.normal(size=4000)), rng.exponential(size=300)]
    current = [rng.normal(0.2, size=800), np.round(rng.normal(0.5, size=2000)), rng.exponential(2.0, size=90)]
    edges = np.full((3, 9), np.inf)
    for feature, sample in enumerate(reference):
        deciles = np.unique(np.quantile(sample, np.linspace(0.1, 0.9, 9)))
        edges[feature, : len(deciles)] = deciles
    ref_counts = quantile_bin_counts(sort_columns(columns(reference)), torch.from_numpy(edges)).double()
    cur_counts = quantile_bin_counts(sort_columns(columns(current)), torch.from_numpy(edges)).double()
    ours = population_stability_index(
        ref_counts / ref_counts.sum(dim=1, keepdim=True), cur_counts / cur_counts.sum(dim=1, keepdim=True)
    )
    for feature in range(3):
        bins = np.concatenate([[-np.inf], edges[feature][np.isfinite(edges[feature])], [np.inf]])
        # Bins (a, b]: a value equal to an edge belongs to the bin the edge closes.
        p = np.array(
            [np.sum((reference[feature] > a) & (reference[feature] <= b)) for a, b in itertools.pairwise(bins)]
        )
        q = np.array([np.sum((current[feature] > a) & (current[feature] <= b)) for a, b in itertools.pairwise(bins)])
        assert ref_counts[feature, : len(p)].tolist() == p.tolist()
        assert cur_counts[feature, : len(q)].tolist() == q.tolist()
        p_freq = np.maximum(p / p.sum(), PSI_EPSILON)
        q_freq = np.maximum(q / q.sum(), PSI_EPSILON)
        expected = np.sum((q_freq - p_freq) * np.log(q_freq / p_freq))
        assert float(ours[feature]) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_histogram_counts_equal_numpys_bins_and_count_values_outside() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=5000)
    counts, edges = np.histogram(reference, bins=50)
    window = np.concatenate([rng.normal(0.3, 1.5, size=3000), edges[[0, 7, 50]]])
    ours = histogram_counts(sort_columns(torch.from_numpy(window[:, None])), torch.from_numpy(edges[None, :]))[0]
    inside = (window >= edges[0]) & (window <= edges[-1])
    assert ours[1:-1].tolist() == np.histogram(window[inside], bins=edges)[0].tolist()
    assert int(ours[0]) == np.sum(window < edges[0])
    assert int(ours[-1]) == np.sum(window > edges[-1])
    reference_counts = histogram_counts(
        sort_columns(torch.from_numpy(reference[:, None])), torch.from_numpy(edges[None])
    )
    assert reference_counts[0, 1:-1].tolist() == counts.tolist()


def test_jensen_shannon_equals_scipy() -> None:
    rng = np.random.default_rng(4)
    p = rng.random((6, 12)) * (rng.random((6, 12)) > 0.3)
    q = rng.random((6, 12)) * (rng.random((6, 12)) > 0.3)
    p[0], q[0] = 0.0, 0.0
    p[0, 0], q[0, 1] = 1.0, 1.0  # disjoint: distance 1
    q[1] = p[1] * 3  # proportional: distance 0
    ours = jensen_shannon(torch.from_numpy(p), torch.from_numpy(q))
    for row in range(6):
        if row != 1:  # SciPy takes the root of a divergence rounded below 0 there: NaN
            assert float(ours[row]) == pytest.approx(jensenshannon(p[row], q[row], base=2), rel=1e-9, abs=1e-9)
    assert float(ours[0]) == pytest.approx(1.0)
    assert float(ours[1]) == pytest.approx(0.0, abs=1e-7)


def test_chi_square_equals_scipys_contingency_test() -> None:
    rng = np.random.default_rng(8)
    reference = rng.integers(0, 400, size=(10, 7)).astype(np.float64)
    current = rng.integers(0, 60, size=(10, 7)).astype(np.float64)
    reference[2, 3] = current[2, 3] = 0  # a category neither sample has
    current[4, 5] = 0  # one only the reference has
    reference[5, 1] = 0  # one only the window has
    current[6, :] = reference[6, :] / 5  # the same proportions: no evidence
    result = chi_square(torch.from_numpy(reference), torch.from_numpy(current))
    for row in range(10):
        table = np.stack([reference[row], current[row]])
        table = table[:, table.sum(axis=0) > 0]
        expected = stats.chi2_contingency(table, correction=False)
        assert float(result.statistic[row]) == pytest.approx(expected.statistic, rel=1e-9, abs=1e-9)
        assert float(result.p_value[row]) == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-12)


def test_fisher_exact_equals_scipys() -> None:
    rng = np.random.default_rng(9)
    reference = np.concatenate([rng.integers(0, 30, size=(40, 2)), [[0, 10_000], [150, 9850], [7, 0]]])
    current = np.concatenate([rng.integers(0, 12, size=(40, 2)), [[3, 17], [0, 20], [0, 5]]])
    ours = fisher_exact(torch.from_numpy(reference).double(), torch.from_numpy(current).double())
    for row, p_value in enumerate(ours.tolist()):
        table = np.stack([reference[row], current[row]])
        if table.sum(axis=1).min() == 0:
            assert math.isnan(p_value)
        else:
            assert p_value == pytest.approx(stats.fisher_exact(table).pvalue, rel=1e-9, abs=1e-15)


def test_two_by_two_is_exact_on_small_tables_and_chi_square_on_large_ones() -> None:
    reference = torch.tensor([[200.0, 9800.0], [2000.0, 8000.0]], dtype=torch.float64)
    current = torch.tensor([[2.0, 18.0], [300.0, 700.0]], dtype=torch.float64)
    result = two_by_two(reference, current)
    chi = chi_square(reference, current)
    assert result.statistic.tolist() == chi.statistic.tolist()
    # An expected count of 0.4 missing values in the window: exact; then all above 5: chi-square.
    assert float(result.p_value[0]) == pytest.approx(stats.fisher_exact([[200, 9800], [2, 18]]).pvalue, rel=1e-9)
    # 2 of 20 against 2%: the approximation calls it significant at 0.05, the exact test does not.
    assert float(chi.p_value[0]) < 0.05 < float(result.p_value[0])
    assert float(result.p_value[1]) == float(chi.p_value[1])


def test_chi2_survival_function_equals_scipys() -> None:
    x = np.concatenate([np.linspace(0, 5, 50), np.linspace(5, 400, 50)])
    for dof in (1, 2, 3, 9, 50, 999):
        ours = chi2_sf(torch.from_numpy(x), torch.full(x.shape, dof)).numpy()
        # torch's regularised incomplete gamma function is good to about 1e-9 relative.
        np.testing.assert_allclose(ours, stats.chi2.sf(x, dof), rtol=1e-8, atol=1e-300)


def test_pool_rare_moves_rare_categories_into_one() -> None:
    reference = torch.tensor([[5000.0, 3000.0, 2.0, 0.0, 1.0]])
    current = torch.tensor([[500.0, 310.0, 0.0, 7.0, 1.0]])
    pooled_reference, pooled_current = pool_rare(reference, current)
    # Expected counts in the window (the smaller sample) of the last three: about 0.2, 0.7 and 0.2.
    assert pooled_reference.tolist() == [[5000.0, 3000.0, 0.0, 0.0, 0.0, 3.0]]
    assert pooled_current.tolist() == [[500.0, 310.0, 0.0, 0.0, 0.0, 8.0]]


def _direct_mmd(x: Floats, y: Floats) -> float:
    """Unbiased MMD^2 with the RBF kernel, bandwidth by the median heuristic, after standardising by x."""
    std = x.std(axis=0)
    pooled = (np.concatenate([x, y]) - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    squared = ((pooled[:, None, :] - pooled[None, :, :]) ** 2).sum(axis=2)
    distances = squared[np.triu_indices(len(pooled), 1)]
    # torch's median of an even count is the lower of the two middle values.
    median = np.sort(distances)[(len(distances) - 1) // 2]
    kernel = np.exp(-squared / (2 * median))
    n, m = len(x), len(y)
    kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    return float((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1)) - 2 * kxy.sum() / (n * m))


def test_mmd_statistic_equals_a_direct_computation_and_the_p_value_is_seeded() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 4)) * [1.0, 2.0, 0.5, 1.0]
    y = rng.normal(size=(120, 4)) * [1.0, 2.0, 0.5, 1.0] + [1.0, 0.0, 0.0, 0.0]
    x[3, 1] = np.nan  # left out with its row

    def seeded() -> KernelTest:
        generator = torch.Generator().manual_seed(1)
        return mmd_test(torch.from_numpy(x), torch.from_numpy(y), max_rows=1000, permutations=200, generator=generator)

    first, again = seeded(), seeded()
    complete = x[np.isfinite(x).all(axis=1)]
    assert first.reference_rows == 149
    assert first.statistic == pytest.approx(_direct_mmd(complete, y), rel=1e-9)
    assert first == again
    assert first.p_value == pytest.approx(1 / 201)  # a shift of 1 sd is far beyond every permutation


def test_mmd_subsamples_to_max_rows_and_needs_two_rows() -> None:
    rng = np.random.default_rng(7)
    x, y = torch.from_numpy(rng.normal(size=(5000, 3))), torch.from_numpy(rng.normal(size=(3000, 3)))
    result = mmd_test(x, y, max_rows=300, permutations=50, generator=torch.Generator().manual_seed(0))
    assert (result.reference_rows, result.current_rows) == (300, 300)
    assert 0 < result.p_value <= 1
    # The rows each sample has, not the ones the subsampling kept of the 5000.
    with pytest.raises(ValueError, match=r"two complete rows per sample, not 5000 and 1$"):
        mmd_test(x, y[:1], max_rows=300, permutations=50, generator=torch.Generator())


def test_mmd_of_a_window_with_values_at_the_top_of_the_float_range_is_a_number() -> None:
    # Standardised by a reference of small values, 1e308 overflowed to inf and the distances to NaN:
    # a NaN statistic that no permutation exceeded, so the least p-value, drift from three values.
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(400, 3)) * 1e-3, rng.normal(size=(200, 3)) * 1e-3

    def with_extremes(value: float) -> KernelTest:
        far = y.copy()
        far[0, 0], far[1, 0], far[2, 1] = value, -value, value
        generator = torch.Generator().manual_seed(2)
        return mmd_test(
            torch.from_numpy(x), torch.from_numpy(far), max_rows=1000, permutations=200, generator=generator
        )

    top, huge = with_extremes(1e308), with_extremes(1e300)
    assert math.isfinite(top.statistic)
    # Both are as far as far goes: the same test, and three rows of 200 are no drift.
    assert top == huge
    assert top.p_value > 0.05


def test_constant_samples() -> None:
    same = sort_columns(torch.full((100, 1), 3.0, dtype=torch.float64))
    other = sort_columns(torch.full((80, 1), 4.0, dtype=torch.float64))
    assert float(ks_two_sample(same, same).statistic[0]) == 0.0
    assert float(ks_two_sample(same, same).p_value[0]) == 1.0
    assert float(ks_two_sample(same, other).statistic[0]) == 1.0
    assert float(wasserstein(same, other)[0]) == pytest.approx(1.0)
    assert math.isclose(float(wasserstein(same, same)[0]), 0.0)


def test_value_counts_at_float32_count_each_value_once_and_the_others_apart() -> None:
    window = torch.tensor([[0.1, 0.1, 0.2, 0.7]], dtype=torch.float32).t()
    # Two float64 values of one float32, a third, padding.
    levels = torch.tensor([[0.1, 0.1 + 1e-12, 0.2, math.inf]], dtype=torch.float64)
    at_float32 = sort_columns(window, at_float32=torch.tensor([True]))
    assert value_counts(at_float32, levels).tolist() == [[2, 0, 1, 0, 1]]
    # Compared exactly, float32(0.1) is not 0.1: every value is one the levels do not hold.
    assert value_counts(sort_columns(window), levels).tolist() == [[0, 0, 0, 0, 4]]
