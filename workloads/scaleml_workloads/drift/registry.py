"""The registry of per-feature drift tests: a test's name -> the function giving its statistic and p-value.

One registry per kind of feature, keyed by the names `Tests.numeric` and `Tests.categorical` take.
Each test runs on every feature of its kind at once and gives a statistic and a p-value; the
window's verdict (`verdict`) corrects the p-values of all its tests together and compares them
with `Thresholds.p_value`. A distance also has to reach its threshold (`Thresholds`), the least
effect that counts:

- ks (numeric): Kolmogorov-Smirnov against the reference's raw values; a feature whose reference
  sample takes at most `prepared.FEW_VALUES` distinct values is tested as chi2 tests categories instead,
  on its counts of each value (values the reference never had in a bucket of their own), and says so:
  Kolmogorov-Smirnov's null assumes no ties, and with few values it is far too conservative.
- chi2 (categorical): chi-square of homogeneity of the category counts against the reference's
  counts; categories expected fewer than five times in either sample are pooled into one.
- psi: population stability index on the reference's deciles (numeric: the reference's raw
  values counted in those bins) or on its categories; at least psi.
- wasserstein (numeric): Wasserstein-1 against the reference's raw values, divided by the
  reference's standard deviation (in the feature's units when that is 0); at least wasserstein.
- js: Jensen-Shannon distance on the reference's histogram bins, with one bin for the values
  below and one for those above them (numeric), or on its categories; at least js.

The distances' p-values come from their null distributions at the window's size (`nulls`): on the
50 bins of a profile's histogram, sampling noise alone makes the Jensen-Shannon distance about
0.10 for windows of 1000 rows and 0.06 for 5000 (against 5000 reference rows), which the p-value
knows and a fixed threshold does not.

Adding a test is adding an entry here (and its name to the API's `Tests`): a function of the
kind's samples (`NumericSamples`, `CategoricalSamples`) to an `Outcome`, and its threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import torch
from torch import Tensor

from scaleml_api.v1alpha1.driftmonitor import Thresholds
from scaleml_workloads.drift.nulls import Distance, Nulls, Unseen
from scaleml_workloads.drift.prepared import PreparedNumeric
from scaleml_workloads.drift.results import TestName
from scaleml_workloads.drift.statistics import (
    SortedColumns,
    chi_square,
    jensen_shannon,
    ks_two_sample,
    on_float32_grid,
    pool_rare,
    population_stability_index,
    quantile_bin_counts,
    share,
    value_counts,
    wasserstein,
)

CONSTANT_REFERENCE: Final = "the reference is constant: the Wasserstein distance is in the feature's units"
FEW_VALUES_NOTE: Final = "few distinct values: tested as counts"


@dataclass(frozen=True)
class NumericSamples:
    """What a numeric test reads of one window, for every numeric feature at once."""

    reference: PreparedNumeric
    current: SortedColumns
    # (features, bins) frequencies in the reference histogram's bins framed by one below and one
    # above, NaN past a feature's bins.
    reference_frequencies: Tensor
    current_frequencies: Tensor
    nulls: Nulls


@dataclass(frozen=True)
class CategoricalSamples:
    """What a categorical test reads of one window: (features, bins) category counts and frequencies, unseen last.

    The counts sum to the sample sizes the tests assume: rows, also for pooled tokens (see `detector`).
    """

    reference_counts: Tensor
    current_counts: Tensor
    reference_frequencies: Tensor
    current_frequencies: Tensor
    nulls: Nulls
    # Per feature, what the reference says of the categories it did not see.
    unseen: list[Unseen]


@dataclass(frozen=True)
class Outcome:
    """A test of every feature of a kind."""

    statistic: Tensor  # (features,) float64, NaN or inf where there is none
    p_value: Tensor  # (features,) float64, NaN where there is none
    # Per feature, "" or what a reader of its statistic needs to know; said only with a statistic.
    notes: list[str] | None = None
    # Per feature, the test that gave its statistic, where that is not always the one configured.
    tests: list[TestName] | None = None


SamplesT = TypeVar("SamplesT", NumericSamples, CategoricalSamples)


@dataclass(frozen=True)
class DriftTest(Generic[SamplesT]):
    """A registered test: what it computes, and the threshold of `Thresholds` it drifts past.

    `minimum_effect`: whether the threshold is a least distance (the distances) rather than a p-value.
    """

    compute: Callable[[SamplesT], Outcome]
    threshold: Callable[[Thresholds], float]
    minimum_effect: bool = False
    # Numeric tests: whether the test reads the raw values of the reference's sample (a feature
    # without any then has no statistic) or only the profile's summaries.
    reads_sample: bool = True


def _p_value(thresholds: Thresholds) -> float:
    return thresholds.p_value


def _psi(thresholds: Thresholds) -> float:
    return float(thresholds.psi)


def _js(thresholds: Thresholds) -> float:
    return float(thresholds.js)


def _wasserstein(thresholds: Thresholds) -> float:
    return float(thresholds.wasserstein)


def numeric_ks(samples: NumericSamples) -> Outcome:
    outcome = ks_two_sample(samples.reference.sorted, samples.current)
    few = samples.reference.few_values
    if not bool(few.any()):
        return Outcome(outcome.statistic, outcome.p_value)
    counted = chi_square(*pool_rare(*_value_counts(samples.reference, samples.current.take(few))))
    statistic, p_value = outcome.statistic.clone(), outcome.p_value.clone()
    statistic[few], p_value[few] = counted.statistic, counted.p_value.to(p_value.device)
    notes = [FEW_VALUES_NOTE if counts else "" for counts in few.tolist()]
    tests: list[TestName] = ["chi2" if counts else "ks" for counts in few.tolist()]
    return Outcome(statistic, p_value, notes=notes, tests=tests)


def _value_counts(reference: PreparedNumeric, current: SortedColumns) -> tuple[Tensor, Tensor]:
    """The counts of each of the reference's few distinct values (`levels`), in its sample and in the window,
    then of the values it never had; compared as every test compares (detector._at_one_precision): where the
    window's float32 values meet float64 ones, the reference's are rounded to float32."""
    few = reference.few_values
    levels, values = reference.levels[few], reference.sorted.values[few]
    if current.at_float32 is not None:
        rounded = current.at_float32.unsqueeze(1)
        levels = torch.where(rounded, on_float32_grid(levels), levels)
        values = torch.where(rounded, on_float32_grid(values), values)
    return value_counts(SortedColumns(values, reference.sorted.counts[few]), levels), value_counts(current, levels)


def numeric_psi(samples: NumericSamples) -> Outcome:
    reference = samples.reference
    frequencies = share(quantile_bin_counts(samples.current, reference.psi_edges), samples.current.counts)
    statistic = population_stability_index(reference.psi_reference, frequencies)
    p_value = samples.nulls.binned(
        "numeric psi",
        reference.psi_reference,
        reference.sorted.counts,
        samples.current.counts,
        statistic,
        population_stability_index,
    )
    return Outcome(statistic, p_value)


def numeric_wasserstein(samples: NumericSamples) -> Outcome:
    std = samples.reference.std
    distance = wasserstein(samples.reference.sorted, samples.current)
    notes = ["" if deviation > 0 else CONSTANT_REFERENCE for deviation in std.tolist()]
    statistic = torch.where(std > 0, distance / std, distance)
    p_value = samples.nulls.wasserstein(samples.reference.sorted, std, samples.current.counts, statistic)
    return Outcome(statistic, p_value, notes=notes)


def numeric_js(samples: NumericSamples) -> Outcome:
    reference, current = samples.reference_frequencies.nan_to_num(0.0), samples.current_frequencies.nan_to_num(0.0)
    statistic = jensen_shannon(reference, current)
    # The reference side is the profile's histogram of every training value.
    sizes = torch.tensor(
        [sum(f.numeric.histogram.counts) if f.numeric else 0 for f in samples.reference.features],
        dtype=torch.int64,
    )
    current = samples.current.counts
    p_value = samples.nulls.binned(
        "numeric js", samples.reference_frequencies, sizes, current, statistic, jensen_shannon, squared=True
    )
    return Outcome(statistic, p_value)


def categorical_chi2(samples: CategoricalSamples) -> Outcome:
    outcome = chi_square(*pool_rare(samples.reference_counts, samples.current_counts))
    return Outcome(outcome.statistic, outcome.p_value)


def categorical_psi(samples: CategoricalSamples) -> Outcome:
    statistic = population_stability_index(samples.reference_frequencies, samples.current_frequencies)
    return Outcome(statistic, _categorical_null("categorical psi", samples, statistic, population_stability_index))


def categorical_js(samples: CategoricalSamples) -> Outcome:
    statistic = jensen_shannon(samples.reference_frequencies, samples.current_frequencies)
    return Outcome(statistic, _categorical_null("categorical js", samples, statistic, jensen_shannon, squared=True))


def _categorical_null(
    test: str, samples: CategoricalSamples, statistic: Tensor, distance: Distance, *, squared: bool = False
) -> Tensor:
    return samples.nulls.binned(
        test,
        samples.reference_frequencies,
        samples.reference_counts.sum(dim=1),
        samples.current_counts.sum(dim=1),
        statistic,
        distance,
        squared=squared,
        unseen=samples.unseen,
    )


NUMERIC_TESTS: Final[Mapping[str, DriftTest[NumericSamples]]] = {
    "ks": DriftTest(numeric_ks, _p_value),
    "psi": DriftTest(numeric_psi, _psi, minimum_effect=True),
    "wasserstein": DriftTest(numeric_wasserstein, _wasserstein, minimum_effect=True),
    # On the profile's histogram: the reference's sample plays no part.
    "js": DriftTest(numeric_js, _js, minimum_effect=True, reads_sample=False),
}
CATEGORICAL_TESTS: Final[Mapping[str, DriftTest[CategoricalSamples]]] = {
    "chi2": DriftTest(categorical_chi2, _p_value),
    "psi": DriftTest(categorical_psi, _psi, minimum_effect=True),
    "js": DriftTest(categorical_js, _js, minimum_effect=True),
}
