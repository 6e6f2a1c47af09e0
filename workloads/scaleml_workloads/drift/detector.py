"""The drift detector: built once from a reference, it checks windows of captured model inputs.

A window is what the capture files hold: arrays by tensor name, one row per captured row. The
features are read out of the model input (`Reference.input`, INPUT__0) as the profile says
(`reduction`, `axis`, `index`); other arrays (outputs, timestamps, ...) are ignored.

Per feature, one test by kind (`Tests`), drifting past its threshold (`Thresholds`):

- ks (numeric): Kolmogorov-Smirnov against the reference's raw values; drifts when p < pValue.
- chi2 (categorical): chi-square of homogeneity of the category counts against the reference's
  counts; categories expected fewer than five times in either sample are pooled into one; drifts
  when p < pValue.
- psi: population stability index on the reference's deciles (numeric: the reference's raw
  values counted in those bins) or on its categories; drifts when above psi.
- wasserstein (numeric): Wasserstein-1 against the reference's raw values, divided by the
  reference's standard deviation (in the feature's units when that is 0); drifts when above wasserstein.
- js: Jensen-Shannon distance on the reference's histogram bins, with one bin for the values
  below and one for those above them (numeric), or on its categories; drifts when above js.
  On the 50 bins of a profile's histogram, sampling noise alone makes it about 0.10 for windows
  of 1000 rows and 0.06 for 5000 (against 5000 reference rows): the threshold has to suit the window.

Missing values are their own signal. A value is missing when it is NaN; ±inf and, for a
categorical feature, a value that is not a whole number, are invalid and counted with the missing
ones (the message says how many). The tests see only the valid values. A feature also drifts when
its share of missing values moved from the reference's, both significantly (chi-square on the
missing and present counts, p < pValue) and by at least MISSING_SHIFT, the message saying so.

A categorical feature's bins are its listed categories and "(unseen)": codes the reference does
not list, whether new or among the ones left out of a profile that lists only the most frequent.

Multivariate: the maximum mean discrepancy over the numeric features read per row (see
statistics.mmd_test), reference rows against window rows; drifts when p < pValue.

Nothing in a window raises: what cannot be tested is a result without a statistic and a message.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from scaleml_api.profile import DataProfile, FeatureProfile, Histogram, NumericSummary
from scaleml_api.v1alpha1.driftmonitor import Tests, Thresholds
from scaleml_workloads.drift.reference import Reference
from scaleml_workloads.drift.statistics import (
    SortedColumns,
    chi_square,
    histogram_counts,
    jensen_shannon,
    ks_two_sample,
    mmd_test,
    pool_rare,
    population_stability_index,
    quantile_bin_counts,
    sort_columns,
    wasserstein,
)

TestName = Literal["ks", "psi", "wasserstein", "js", "chi2"]

# The least change of a feature's share of missing values that counts as drift (when significant).
MISSING_SHIFT: Final = 0.05
UNSEEN: Final = "(unseen)"
_DECILES: Final = np.linspace(0.1, 0.9, 9)
_P_VALUE_TESTS: Final = ("ks", "chi2")


@dataclass(frozen=True)
class FeatureResult:
    """One feature of one window."""

    name: str
    kind: Literal["numeric", "categorical"]
    test: TestName
    statistic: float | None  # None when it could not be computed (see message)
    p_value: float | None  # None for distance tests (psi, wasserstein, js)
    threshold: float
    drifted: bool
    rows: int  # valid values in the window (observations, for a pooled feature)
    missing_fraction: float  # missing or invalid, in the window
    reference_missing_fraction: float
    message: str  # "" or why there is no result / what was odd
    # For plots, the same bins for both: numeric, the reference histogram's bins framed by one
    # below and one above; categorical, the listed categories and "(unseen)".
    bins: list[str]
    reference_frequencies: list[float]
    current_frequencies: list[float]


@dataclass(frozen=True)
class MultivariateResult:
    """The test of all numeric features together."""

    test: Literal["mmd"]
    statistic: float
    p_value: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """One window against the reference."""

    features: list[FeatureResult]
    multivariate: MultivariateResult | None
    rows: int  # rows in the window
    rows_rejected: int  # rows that could not be used at all (wrong shape, every value missing or invalid, ...)
    drifted_features: list[str]
    share_drifted: float  # drifted features / features assessed (with a statistic, or drifted by missing values)
    drift_detected: bool  # share_drifted >= thresholds.share_of_drifted_features, or the multivariate test drifted
    # The mean severity of the tests run, in [0, 1]: a drifted feature or multivariate test is 1; one
    # that did not drift is how far it went towards its threshold, statistic / threshold for the
    # distances and ln(p) / ln(pValue) for p-values (0 at p = 1; on data without drift it averages
    # 1 / ln(1 / pValue), 0.22 at pValue = 0.01). 0 when nothing could be tested.
    score: float
    messages: list[str]  # window-level problems: window smaller than asked, input missing or misshapen, ...


@dataclass(frozen=True)
class _Numeric:
    """The reference side of the numeric features, on the device."""

    features: list[FeatureProfile]  # in the order `reads` reads them
    # How to read them from the input: (reduction, axis, indices on that axis), in order. Indices
    # are None for every column in order (a numeric table), which a plain transposed copy reads fastest.
    reads: list[tuple[str, int, Tensor | None]]
    values: Tensor  # (rows, features) raw values, for the multivariate test
    sorted: SortedColumns
    std: Tensor  # (features,) float64, NaN without values
    psi_edges: Tensor  # (features, 9) deciles, duplicates as +inf
    psi_reference: Tensor  # (features, 10) frequencies of the raw values in those bins
    # Histograms grouped by their number of edges: feature positions, edges, reference frequencies.
    histograms: list[tuple[Tensor, Tensor, Tensor]]
    labels: list[list[str]]


@dataclass(frozen=True)
class _Categorical:
    """The reference side of one categorical feature."""

    feature: FeatureProfile
    lookup: Tensor  # code -> bin; codes past its end are unseen
    reference_counts: Tensor  # (bins,) float64, the last for unseen
    labels: list[str]


@dataclass(frozen=True)
class _Observed:
    """What a window holds of one feature's values: counts of valid, missing and invalid values."""

    valid: int
    missing: int
    invalid: int

    @property
    def total(self) -> int:
        return self.valid + self.missing + self.invalid

    @property
    def missing_fraction(self) -> float:
        return (self.missing + self.invalid) / self.total if self.total else 0.0


class DetectorOptions(TypedDict, total=False):
    """The keyword options of `DriftDetector`, for constructors that pass them through."""

    device: str
    seed: int
    mmd_rows: int
    mmd_permutations: int


class DriftDetector:
    """Compares windows of captured model inputs with a reference; build once, `check` every window."""

    def __init__(
        self,
        reference: Reference,
        tests: Tests,
        thresholds: Thresholds,
        features: Sequence[str] = (),
        *,
        device: str = "cpu",
        seed: int = 0,
        mmd_rows: int = 1000,
        mmd_permutations: int = 500,
    ) -> None:
        """`features`: the names to test, empty for all of the reference's; `mmd_rows` rows of each
        sample and `mmd_permutations` permutations bound the multivariate test's cost; `seed` fixes its draws."""
        self.reference = reference
        self.tests = tests
        self.thresholds = thresholds
        self.device = torch.device(device)
        self.seed = seed
        self.mmd_rows = mmd_rows
        self.mmd_permutations = mmd_permutations
        self._messages: list[str] = []
        self._features: list[FeatureProfile] = []
        for name in dict.fromkeys(features or [feature.name for feature in reference.features]):
            feature = reference.feature(name)
            if feature is None:
                self._messages.append(f"feature {name!r} is not in the reference profile; it is not tested")
            else:
                self._features.append(feature)
        self._unreadable = {
            feature.name: problem for feature in self._features if (problem := self._placement_problem(feature))
        }
        readable = [feature for feature in self._features if feature.name not in self._unreadable]
        self._numeric = self._prepare_numeric([feature for feature in readable if feature.kind == "numeric"])
        self._categorical = [self._prepare_categorical(f) for f in readable if f.kind == "categorical"]

    @classmethod
    def from_profile(
        cls,
        profile: DataProfile,
        tests: Tests,
        thresholds: Thresholds,
        features: Sequence[str] = (),
        **options: Unpack[DetectorOptions],
    ) -> DriftDetector:
        """A detector against a reference profile as training writes it."""
        return cls(Reference.from_profile(profile), tests, thresholds, features, **options)

    def check(self, window: Mapping[str, npt.NDArray[np.generic]], expected_rows: int | None = None) -> DriftResult:
        """Test one window: arrays by tensor name, rows first. `expected_rows`: the window size asked for."""
        messages = list(self._messages)
        data, rows = self._input(window, messages)
        if expected_rows is not None and rows < expected_rows:
            messages.append(f"the window has {rows} rows, fewer than the {expected_rows} asked for")
        if data is None or rows == 0:
            reason = "the window has no rows" if data is not None else "the window's input could not be read"
            return self._summary([self._without_result(f, reason) for f in self._features], None, rows, rows, messages)
        numeric = self._read_numeric(data)
        current = sort_columns(numeric)
        codes = [self._read_codes(data, categorical.feature) for categorical in self._categorical]
        results = {**self._numeric_results(numeric, current), **self._categorical_results(codes)}
        for feature in self._features:
            if feature.name in self._unreadable:
                results[feature.name] = self._without_result(feature, self._unreadable[feature.name])
        multivariate = self._multivariate(numeric, messages)
        # A row is rejected when none of its values can be used; a feature without missing values uses them all.
        if bool((current.counts == rows).any()):
            usable = torch.ones(rows, dtype=torch.bool, device=self.device)
        else:
            usable = torch.isfinite(numeric).any(dim=1)
        for observations in codes:
            usable |= torch.isfinite(observations.reshape(rows, -1)).any(dim=1).to(usable.device)
        features = [results[feature.name] for feature in self._features]
        return self._summary(features, multivariate, rows, rows - int(usable.sum()), messages)

    # Reading a window.

    def _input(self, window: Mapping[str, npt.NDArray[np.generic]], messages: list[str]) -> tuple[Tensor | None, int]:
        name, dims = self.reference.input.name, tuple(self.reference.input.dims)
        array = window.get(name)
        if array is None:
            others = next((value for value in window.values() if np.ndim(value) > 0), None)
            rows = len(others) if others is not None else 0
            messages.append(f"the window has no {name} (it has {', '.join(sorted(window)) or 'nothing'})")
            return None, rows
        try:
            data = np.asarray(array)
        except (TypeError, ValueError) as error:
            messages.append(f"{name} is not an array: {error}")
            return None, 0
        rows = len(data) if data.ndim else 0
        if data.dtype.kind not in "biuf":
            messages.append(f"{name} holds {data.dtype} values, not numbers")
            return None, rows
        if data.shape[1:] != dims:
            messages.append(self._shape_problem(name, data.shape[1:], dims))
            return None, rows
        dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.float64
        return torch.from_numpy(np.ascontiguousarray(data, dtype=dtype)).to(self.device), rows

    @staticmethod
    def _shape_problem(name: str, shape: tuple[int, ...], dims: tuple[int, ...]) -> str:
        expected = f"rows of shape {list(dims)}"
        if len(shape) == len(dims) == 1:
            change = "added" if shape[0] > dims[0] else "missing"
            return (
                f"{name} has {shape[0]} columns, the reference's input has {dims[0]} "
                f"({abs(shape[0] - dims[0])} {change}): no feature is tested"
            )
        return f"{name} has rows of shape {list(shape)}, the reference's input has {expected}: no feature is tested"

    def _placement_problem(self, feature: FeatureProfile) -> str:
        dims = self.reference.input.dims
        if feature.reduction == "pool":
            return "" if feature.kind == "categorical" else "a numeric feature cannot be pooled; it is not tested"
        axis, index = feature.axis, feature.index
        if axis is None or index is None or not 1 <= axis <= len(dims) or not 0 <= index < dims[axis - 1]:
            return f"the profile places it at axis {axis}, index {index}, outside the input's rows of shape {dims}"
        if feature.reduction == "none" and len(dims) != 1:
            return f"the profile reads it as one value per row, but the input's rows have shape {dims}"
        if feature.reduction == "mean" and feature.kind == "categorical":
            return "a categorical feature cannot be averaged; it is not tested"
        return ""

    def _read_numeric(self, data: Tensor) -> Tensor:
        """The numeric features' values, (rows, features), float64 for means.

        The transpose of a contiguous (features, rows) tensor: every statistic reads features whole.
        """
        blocks = []
        for reduction, axis, indices in self._numeric.reads:
            if indices is None:
                blocks.append(data.t().contiguous())
            elif reduction == "mean":
                per_row = data.movedim(axis, 1).reshape(data.shape[0], data.shape[axis], -1).to(torch.float64)
                blocks.append(torch.nanmean(per_row, dim=2).t().index_select(0, indices))
            else:
                blocks.append(data.t().index_select(0, indices))
        if not blocks:
            return torch.empty(0, data.shape[0], dtype=data.dtype, device=self.device).t()
        if len(blocks) == 1:
            return blocks[0].t()
        dtype = torch.float64 if any(block.dtype == torch.float64 for block in blocks) else data.dtype
        return torch.cat([block.to(dtype) for block in blocks]).t()

    @staticmethod
    def _read_codes(data: Tensor, feature: FeatureProfile) -> Tensor:
        if feature.reduction == "pool":
            return data.reshape(-1)
        return data.select(*_place(feature))

    # The reference side.

    def _prepare_numeric(self, readable: list[FeatureProfile]) -> _Numeric:
        groups: dict[tuple[str, int], list[FeatureProfile]] = {}
        for feature in readable:
            groups.setdefault((feature.reduction, _place(feature)[0]), []).append(feature)
        features = [feature for group in groups.values() for feature in group]
        reads: list[tuple[str, int, Tensor | None]] = []
        for (reduction, axis), group in groups.items():
            indices = [_place(feature)[1] for feature in group]
            every = reduction == "none" and indices == list(range(self.reference.input.dims[0]))
            reads.append((reduction, axis, None if every else torch.tensor(indices, device=self.device)))
        rows = self.reference.rows
        columns = [self.reference.values.get(feature.name, np.full(rows, np.nan)) for feature in features]
        values = torch.from_numpy(np.stack(columns) if columns else np.empty((0, rows))).to(self.device).t()
        ordered = sort_columns(values)
        summaries = [feature.numeric for feature in features]
        std = torch.tensor([s.std if s else math.nan for s in summaries], dtype=torch.float64, device=self.device)
        psi_edges = torch.from_numpy(_decile_edges(summaries)).to(self.device)
        psi_reference = _share(quantile_bin_counts(ordered, psi_edges), ordered.counts)
        labels = [_histogram_labels(summary.histogram.edges) if summary else [] for summary in summaries]
        histograms = self._histograms(summaries)
        return _Numeric(features, reads, values, ordered, std, psi_edges, psi_reference, histograms, labels)

    def _histograms(self, summaries: list[NumericSummary | None]) -> list[tuple[Tensor, Tensor, Tensor]]:
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
                    torch.tensor([position for position, _ in group], device=self.device),
                    torch.tensor([histogram.edges for _, histogram in group], dtype=torch.float64, device=self.device),
                    torch.from_numpy(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).to(self.device),
                )
            )
        return histograms

    def _prepare_categorical(self, feature: FeatureProfile) -> _Categorical:
        summary = feature.categorical
        categories = summary.categories if summary else []
        lookup = np.full(max((c.code for c in categories), default=-1) + 1, len(categories), dtype=np.int64)
        for position, category in enumerate(categories):
            lookup[category.code] = position
        counts = [float(c.count) for c in categories] + [float(summary.other_count if summary else 0)]
        return _Categorical(
            feature,
            torch.from_numpy(lookup).to(self.device),
            torch.tensor(counts, dtype=torch.float64, device=self.device),
            [c.value for c in categories] + [UNSEEN],
        )

    # Tests.

    def _numeric_results(self, values: Tensor, current: SortedColumns) -> dict[str, FeatureResult]:
        reference = self._numeric
        if not reference.features:
            return {}
        finite = current.counts
        incomplete = finite < values.shape[0]
        # Counting NaNs reads the whole window: only for the features with values that are not finite.
        missing = torch.zeros_like(finite)
        if bool(incomplete.any()):
            missing[incomplete] = torch.isnan(values[:, incomplete]).sum(dim=0)
        observed = [
            _Observed(int(v), int(m), values.shape[0] - int(v) - int(m))
            for v, m in zip(finite.tolist(), missing.tolist(), strict=True)
        ]
        histogram_width = max((edges.shape[1] + 1 for _, edges, _ in reference.histograms), default=0)
        current_frequencies = torch.full(
            (len(reference.features), histogram_width), math.nan, dtype=torch.float64, device=self.device
        )
        reference_frequencies = current_frequencies.clone()
        for positions, edges, frequencies in reference.histograms:
            counts = histogram_counts(SortedColumns(current.values[positions], finite[positions]), edges)
            current_frequencies[positions, : counts.shape[1]] = _share(counts, finite[positions])
            reference_frequencies[positions, : counts.shape[1]] = frequencies
        test = self.tests.numeric
        p_values: Tensor | None = None
        if test == "ks":
            outcome = ks_two_sample(reference.sorted, current)
            statistics, p_values = outcome.statistic, outcome.p_value
        elif test == "psi":
            frequencies = _share(quantile_bin_counts(current, reference.psi_edges), finite)
            statistics = population_stability_index(reference.psi_reference, frequencies)
        elif test == "wasserstein":
            distance = wasserstein(reference.sorted, current)
            statistics = torch.where(reference.std > 0, distance / reference.std, distance)
        else:
            statistics = jensen_shannon(reference_frequencies.nan_to_num(0.0), current_frequencies.nan_to_num(0.0))
        missing_drift = self._missing_drift(reference.features, observed)
        results = {}
        for position, feature in enumerate(reference.features):
            notes = []
            statistic = _number(statistics[position])
            reason = self._numeric_gap(feature, test, position, observed[position])
            if reason:
                statistic = None
                notes.append(reason)
            if test == "wasserstein" and statistic is not None and not float(reference.std[position]) > 0:
                notes.append("the reference is constant: the Wasserstein distance is in the feature's units")
            bins = reference.labels[position]
            results[feature.name] = self._result(
                feature,
                test,
                statistic,
                _number(p_values[position]) if p_values is not None and statistic is not None else None,
                observed[position],
                missing_drift[position],
                notes,
                bins,
                _frequencies(reference_frequencies[position], len(bins)),
                _frequencies(current_frequencies[position], len(bins)),
            )
        return results

    def _numeric_gap(self, feature: FeatureProfile, test: str, position: int, observed: _Observed) -> str:
        """Why a numeric feature has no statistic, or ""."""
        if feature.numeric is None:
            return "the reference has no values of this feature"
        if test != "js" and int(self._numeric.sorted.counts[position]) == 0:
            return "the reference's sample has no values of this feature"
        if observed.valid == 0:
            return "the window has no valid values of this feature"
        return ""

    def _categorical_results(self, codes: list[Tensor]) -> dict[str, FeatureResult]:
        if not self._categorical:
            return {}
        counts, observed = [], []
        for categorical, values in zip(self._categorical, codes, strict=True):
            finite = torch.isfinite(values)
            code = torch.where(finite, values, -1.0)
            # A value that is not a whole number is no category code; a negative code names none either.
            whole = finite & (code == torch.round(code))
            known = whole & (code >= 0) & (code < len(categorical.lookup))
            bins = torch.full_like(code, len(categorical.labels) - 1, dtype=torch.int64)
            bins[known] = categorical.lookup[code[known].to(torch.int64)]
            counts.append(torch.bincount(bins[whole], minlength=len(categorical.labels)).to(torch.float64))
            valid = int(whole.sum())
            nan = int(torch.isnan(values).sum())
            observed.append(_Observed(valid, nan, values.numel() - valid - nan))
        width = max(len(categorical.labels) for categorical in self._categorical)
        reference = torch.zeros(len(codes), width, dtype=torch.float64, device=self.device)
        current = torch.zeros_like(reference)
        for position, (categorical, count) in enumerate(zip(self._categorical, counts, strict=True)):
            # Unseen is the last bin of every row, the shorter rows padded with empty bins before it.
            reference[position, : len(count) - 1] = categorical.reference_counts[:-1]
            reference[position, -1] = categorical.reference_counts[-1]
            current[position, : len(count) - 1] = count[:-1]
            current[position, -1] = count[-1]
        test = self.tests.categorical
        p_values: Tensor | None = None
        reference_frequencies = reference / reference.sum(dim=1, keepdim=True)
        current_frequencies = current / current.sum(dim=1, keepdim=True)
        if test == "chi2":
            outcome = chi_square(*pool_rare(reference, current))
            statistics, p_values = outcome.statistic, outcome.p_value
        elif test == "psi":
            statistics = population_stability_index(reference_frequencies, current_frequencies)
        else:
            statistics = jensen_shannon(reference_frequencies, current_frequencies)
        features = [categorical.feature for categorical in self._categorical]
        missing_drift = self._missing_drift(features, observed)
        results = {}
        for position, categorical in enumerate(self._categorical):
            feature, seen = categorical.feature, observed[position]
            notes = []
            statistic = _number(statistics[position])
            if feature.categorical is None or not feature.categorical.categories:
                statistic, notes = None, ["the reference has no values of this feature"]
            elif seen.valid == 0:
                statistic, notes = None, ["the window has no valid values of this feature"]
            unseen = float(current[position, -1])
            if unseen and seen.valid:
                notes.append(
                    f"{unseen:.0f} values ({unseen / seen.valid:.1%}) are categories the reference does not list"
                )
            labels = categorical.labels
            ref_row = torch.cat(
                [reference_frequencies[position, : len(labels) - 1], reference_frequencies[position, -1:]]
            )
            cur_row = torch.cat([current_frequencies[position, : len(labels) - 1], current_frequencies[position, -1:]])
            results[feature.name] = self._result(
                feature,
                test,
                statistic,
                _number(p_values[position]) if p_values is not None and statistic is not None else None,
                seen,
                missing_drift[position],
                notes,
                labels,
                _frequencies(ref_row, len(labels)),
                _frequencies(cur_row, len(labels)),
            )
        return results

    def _missing_drift(self, features: list[FeatureProfile], observed: list[_Observed]) -> list[str]:
        """Per feature, why its share of missing values counts as drift, or ""."""
        reference = torch.tensor(
            [[f.missing, f.count - f.missing] for f in features], dtype=torch.float64, device=self.device
        )
        current = torch.tensor(
            [[o.missing + o.invalid, o.valid] for o in observed], dtype=torch.float64, device=self.device
        )
        p_values = chi_square(reference, current).p_value.tolist()
        notes = []
        for feature, seen, p_value in zip(features, observed, p_values, strict=True):
            before = feature.missing / feature.count if feature.count else 0.0
            moved = abs(seen.missing_fraction - before) >= MISSING_SHIFT and p_value < self.thresholds.p_value
            notes.append(
                f"missing in {seen.missing_fraction:.1%} of the window, {before:.1%} of the reference" if moved else ""
            )
        return notes

    def _multivariate(self, values: Tensor, messages: list[str]) -> MultivariateResult | None:
        if self.tests.multivariate == "none":
            return None
        reference = self._numeric
        # Only features with values on both sides: one without would leave no complete row.
        usable = (reference.sorted.counts > 0) & torch.isfinite(values).any(dim=0)
        if not bool(usable.any()):
            messages.append("the multivariate test needs numeric features with values in the reference and the window")
            return None
        left_out = [feature.name for feature, use in zip(reference.features, usable.tolist(), strict=True) if not use]
        if left_out:
            messages.append(f"the multivariate test leaves out features without values: {', '.join(left_out)}")
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        try:
            outcome = mmd_test(
                reference.values[:, usable],
                values[:, usable],
                max_rows=self.mmd_rows,
                permutations=self.mmd_permutations,
                generator=generator,
            )
        except ValueError as error:
            messages.append(f"no multivariate test: {error}")
            return None
        return MultivariateResult("mmd", outcome.statistic, outcome.p_value, outcome.p_value < self.thresholds.p_value)

    # Results.

    def _threshold(self, test: TestName) -> float:
        if test in _P_VALUE_TESTS:
            return self.thresholds.p_value
        return float(getattr(self.thresholds, test))

    def _result(
        self,
        feature: FeatureProfile,
        test: TestName,
        statistic: float | None,
        p_value: float | None,
        observed: _Observed,
        missing_drift: str,
        notes: list[str],
        bins: list[str],
        reference_frequencies: list[float],
        current_frequencies: list[float],
    ) -> FeatureResult:
        threshold = self._threshold(test)
        if statistic is None:
            drifted = False
        elif p_value is not None:
            drifted = p_value < threshold
        else:
            drifted = statistic > threshold
        if observed.invalid:
            kinds = "±inf" if feature.kind == "numeric" else "no category code"
            notes.append(f"{observed.invalid} values are {kinds} (counted as missing)")
        if missing_drift:
            notes.append(missing_drift)
        return FeatureResult(
            name=feature.name,
            kind=feature.kind,
            test=test,
            statistic=statistic,
            p_value=p_value,
            threshold=threshold,
            drifted=drifted or bool(missing_drift),
            rows=observed.valid,
            missing_fraction=observed.missing_fraction,
            reference_missing_fraction=feature.missing / feature.count if feature.count else 0.0,
            message="; ".join(notes),
            bins=bins,
            reference_frequencies=reference_frequencies,
            current_frequencies=current_frequencies,
        )

    def _without_result(self, feature: FeatureProfile, reason: str) -> FeatureResult:
        test: TestName = self.tests.numeric if feature.kind == "numeric" else self.tests.categorical
        return FeatureResult(
            name=feature.name,
            kind=feature.kind,
            test=test,
            statistic=None,
            p_value=None,
            threshold=self._threshold(test),
            drifted=False,
            rows=0,
            missing_fraction=0.0,
            reference_missing_fraction=feature.missing / feature.count if feature.count else 0.0,
            message=reason,
            bins=[],
            reference_frequencies=[],
            current_frequencies=[],
        )

    def _summary(
        self,
        features: list[FeatureResult],
        multivariate: MultivariateResult | None,
        rows: int,
        rows_rejected: int,
        messages: list[str],
    ) -> DriftResult:
        assessed = [result for result in features if result.statistic is not None or result.drifted]
        drifted = [result.name for result in assessed if result.drifted]
        share = len(drifted) / len(assessed) if assessed else 0.0
        severities = [self._severity(r.test, r.statistic, r.p_value, r.threshold, r.drifted) for r in assessed]
        if multivariate is not None:
            severities.append(
                self._severity(
                    "mmd", multivariate.statistic, multivariate.p_value, self.thresholds.p_value, multivariate.drifted
                )
            )
        if not assessed:
            messages.append("no feature could be tested")
        return DriftResult(
            features=features,
            multivariate=multivariate,
            rows=rows,
            rows_rejected=rows_rejected,
            drifted_features=drifted,
            share_drifted=share,
            drift_detected=(bool(assessed) and share >= self.thresholds.share_of_drifted_features)
            or (multivariate is not None and multivariate.drifted),
            score=sum(severities) / len(severities) if severities else 0.0,
            messages=messages,
        )

    @staticmethod
    def _severity(test: str, statistic: float | None, p_value: float | None, threshold: float, drifted: bool) -> float:
        if drifted or statistic is None:
            return 1.0 if drifted else 0.0
        if p_value is not None:
            return min(1.0, math.log(p_value) / math.log(threshold)) if p_value > 0 else 1.0
        return min(1.0, statistic / threshold)


def _share(counts: Tensor, totals: Tensor) -> Tensor:
    """Counts (features, bins) as frequencies of their feature's total, float64 (NaN for a total of 0)."""
    return counts.to(torch.float64) / totals.to(torch.float64).unsqueeze(1)


def _number(value: Tensor) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _frequencies(row: Tensor, length: int) -> list[float]:
    return [0.0 if math.isnan(value) else value for value in row[:length].tolist()]


def _place(feature: FeatureProfile) -> tuple[int, int]:
    # A readable feature has both (see DriftDetector._placement_problem).
    assert feature.axis is not None
    assert feature.index is not None
    return feature.axis, feature.index


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
