"""Two-sample statistics of many features at once, on torch tensors (CPU or GPU).

Data come as columns of features: a tensor shaped (rows, features) in which every non-finite
value (NaN, +inf, -inf) is missing, so each feature may have its own number of values. Tests on
raw values read the columns sorted once (`sort_columns`); tests on bins read frequencies per bin
(`quantile_bin_counts` and `histogram_counts` with `share`, or category counts the caller makes).

The results are SciPy's:

- `ks_two_sample`: `scipy.stats.ks_2samp` (two-sided, method "auto": the exact distribution when
  neither sample has more than `EXACT_KS_MAX_SIZE` values, else the asymptotic one);
- `wasserstein`: `scipy.stats.wasserstein_distance`;
- `jensen_shannon`: `scipy.spatial.distance.jensenshannon(p, q, base=2)`;
- `chi_square`: `scipy.stats.chi2_contingency(table, correction=False)` on the 2 x K table of counts.

By idea, one module each: `columns` the sorted columns and bin counts every statistic reads,
`two_sample` the tests with p-values (Kolmogorov-Smirnov, chi-square), `kolmogorov` the null
distributions of the Kolmogorov-Smirnov statistic, `distances` PSI, Wasserstein and
Jensen-Shannon, `mmd` the multivariate maximum mean discrepancy. This package names them all.
"""

from scaleml_workloads.drift.statistics.columns import (
    SortedColumns,
    float32_data,
    histogram_counts,
    on_float32_grid,
    quantile_bin_counts,
    share,
    sort_columns,
    value_counts,
)
from scaleml_workloads.drift.statistics.distances import (
    PSI_EPSILON,
    jensen_shannon,
    population_stability_index,
    wasserstein,
)
from scaleml_workloads.drift.statistics.mmd import KernelTest, mmd_test
from scaleml_workloads.drift.statistics.two_sample import (
    EXACT_KS_MAX_SIZE,
    MIN_EXPECTED_COUNT,
    TwoSample,
    chi2_sf,
    chi_square,
    fisher_exact,
    ks_p_value,
    ks_statistic,
    ks_two_sample,
    pool_rare,
    two_by_two,
)

__all__ = [
    "EXACT_KS_MAX_SIZE",
    "MIN_EXPECTED_COUNT",
    "PSI_EPSILON",
    "KernelTest",
    "SortedColumns",
    "TwoSample",
    "chi2_sf",
    "chi_square",
    "fisher_exact",
    "float32_data",
    "histogram_counts",
    "jensen_shannon",
    "ks_p_value",
    "ks_statistic",
    "ks_two_sample",
    "mmd_test",
    "on_float32_grid",
    "pool_rare",
    "population_stability_index",
    "quantile_bin_counts",
    "share",
    "sort_columns",
    "two_by_two",
    "value_counts",
    "wasserstein",
]
