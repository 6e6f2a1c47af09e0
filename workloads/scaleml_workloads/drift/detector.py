"""The drift detector: built once from a reference, it checks windows of captured model inputs.

A window is read as `window` says: arrays by tensor name, the features read out of the model
input. Per feature, one test by kind (`Tests`), taken from the registry (`registry`, which
describes each test), each with a p-value. The window's tests are corrected together and judged
at `Thresholds.pValue` (`verdict`, which states the error rate); the score weights each feature by
its importance (`score`). The reference side is prepared once, when the detector is built (`prepared`).

Missing values are their own signal. A value is missing when it is NaN; ±inf and, for a
categorical feature, a value that is not a whole number, are invalid and counted with the missing
ones (the message says how many). The tests see only the valid values. A feature also drifts when
its share of missing values moved from the reference's, both significantly (a test of its own,
"missing": chi-square on the missing and present counts, with Fisher's exact p-value where an
expected count is below 5, in the window's family) and by at least MISSING_SHIFT, the message
saying so; that test then decides the feature's result.

A categorical feature's bins are its listed categories and "(unseen)": codes the reference does
not list, whether new or among the ones left out of a profile that lists only the most frequent.
The tokens of a text model, pooled into one feature, are tested at the number of rows, not of
tokens: the tokens of a row are not independent (they share its topic, its author), and counted as
independent draws they would make every window of correlated text drift. Their counts are divided
by the tokens a row holds before the test; the frequencies compared are the same.

Multivariate: the maximum mean discrepancy over the numeric features read per row (see
statistics.mmd_test), reference rows against window rows, in the window's family.

Nothing in a window raises: what cannot be tested is a result without a statistic and a message.
The results (`results`) are named here too, where the monitor imports them from.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypedDict, Unpack

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from scaleml_api.profile import DataProfile, FeatureProfile
from scaleml_api.v1alpha1.driftmonitor import Tests, Thresholds
from scaleml_workloads.drift.nulls import Nulls
from scaleml_workloads.drift.prepared import UNSEEN, PreparedNumeric, prepare_categorical, prepare_numeric
from scaleml_workloads.drift.reference import Reference
from scaleml_workloads.drift.registry import (
    CATEGORICAL_TESTS,
    NUMERIC_TESTS,
    CategoricalSamples,
    DriftTest,
    NumericSamples,
    Outcome,
)
from scaleml_workloads.drift.results import (
    DriftResult,
    FeatureResult,
    MultivariateResult,
    Observed,
    TestName,
    TestResult,
    TopFeature,
    feature_result,
    without_result,
)
from scaleml_workloads.drift.statistics import (
    SortedColumns,
    float32_data,
    histogram_counts,
    mmd_test,
    on_float32_grid,
    share,
    sort_columns,
    two_by_two,
)
from scaleml_workloads.drift.tables import encode_window, read_columns
from scaleml_workloads.drift.verdict import summarise
from scaleml_workloads.drift.window import placement_problem, read_codes, read_input, read_numeric

__all__ = [
    "MISSING_SHIFT",
    "UNSEEN",
    "DetectorOptions",
    "DriftDetector",
    "DriftResult",
    "FeatureResult",
    "MultivariateResult",
    "TestName",
    "TestResult",
    "TopFeature",
]

# The least change of a feature's share of missing values that counts as drift (when significant).
MISSING_SHIFT: Final = 0.05


@dataclass(frozen=True)
class _Tested:
    """One kind of feature after its test, per feature in order: what its results are made of."""

    features: list[FeatureProfile]
    test: TestName
    threshold: float
    minimum_effect: bool  # the threshold is a least distance, not a p-value
    outcome: Outcome
    observed: list[Observed]
    gaps: list[str]  # why the feature has no statistic, or ""
    notes: list[list[str]]  # what else there is to say of it
    bins: list[list[str]]
    # Its frequencies in those bins, reference and window (read up to its number of bins).
    reference_frequencies: Sequence[Tensor]
    current_frequencies: Sequence[Tensor]


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
        self._nulls = Nulls(seed)
        self._features: list[FeatureProfile] = []
        for name in dict.fromkeys(features or [feature.name for feature in reference.features]):
            feature = reference.feature(name)
            if feature is None:
                self._messages.append(f"feature {name!r} is not in the reference profile; it is not tested")
            else:
                self._features.append(feature)
        self._unreadable = {
            feature.name: problem
            for feature in self._features
            if (problem := placement_problem(feature, reference.input.dims))
        }
        self._importances = {feature.name: feature.importance for feature in self._features}
        readable = [feature for feature in self._features if feature.name not in self._unreadable]
        numeric = [feature for feature in readable if feature.kind == "numeric"]
        self._numeric = prepare_numeric(reference, numeric, self.device)
        self._categorical = [prepare_categorical(f, self.device) for f in readable if f.kind == "categorical"]

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
        return self._check(window, expected_rows, {}, [])

    def _check(
        self,
        window: Mapping[str, npt.NDArray[np.generic]],
        expected_rows: int | None,
        gaps: Mapping[str, str],
        notes: list[str],
    ) -> DriftResult:
        """`check`, with the features that `gaps` names left without a statistic (why, by name), and `notes`
        first among the window's messages."""
        messages = [*notes, *self._messages]
        data, rows = read_input(window, self.reference.input, self.device, messages)
        if expected_rows is not None and rows < expected_rows:
            messages.append(f"the window has {rows} rows, fewer than the {expected_rows} asked for")
        if data is None or rows == 0:
            reason = "the window has no rows" if data is not None else "the window's input could not be read"
            return self._summary([self._without_result(f, reason) for f in self._features], None, rows, rows, messages)
        numeric, current = _at_one_precision(read_numeric(data, self._numeric.reads, self.device), self._numeric)
        codes = [read_codes(data, categorical.feature) for categorical in self._categorical]
        results = {**self._numeric_results(numeric, current), **self._categorical_results(codes)}
        for feature in self._features:
            if gap := self._unreadable.get(feature.name) or gaps.get(feature.name):
                results[feature.name] = self._without_result(feature, gap)
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
            Observed(int(v), int(m), values.shape[0] - int(v) - int(m))
            for v, m in zip(finite.tolist(), missing.tolist(), strict=True)
        ]
        histogram_width = max((edges.shape[1] + 1 for _, edges, _ in reference.histograms), default=0)
        current_frequencies = torch.full(
            (len(reference.features), histogram_width), math.nan, dtype=torch.float64, device=self.device
        )
        reference_frequencies = current_frequencies.clone()
        for positions, edges, frequencies in reference.histograms:
            counts = histogram_counts(current.take(positions), edges)
            current_frequencies[positions, : counts.shape[1]] = share(counts, finite[positions])
            reference_frequencies[positions, : counts.shape[1]] = frequencies
        test = self.tests.numeric
        drift_test = NUMERIC_TESTS[test]
        outcome = drift_test.compute(
            NumericSamples(reference, current, reference_frequencies, current_frequencies, self._nulls)
        )
        gaps = [
            self._numeric_gap(feature, drift_test, position, seen)
            for position, (feature, seen) in enumerate(zip(reference.features, observed, strict=True))
        ]
        return self._judged(
            _Tested(
                features=reference.features,
                test=test,
                threshold=drift_test.threshold(self.thresholds),
                minimum_effect=drift_test.minimum_effect,
                outcome=outcome,
                observed=observed,
                gaps=gaps,
                notes=[[] for _ in gaps],
                bins=reference.labels,
                reference_frequencies=reference_frequencies.unbind(),
                current_frequencies=current_frequencies.unbind(),
            )
        )

    def _numeric_gap(
        self, feature: FeatureProfile, test: DriftTest[NumericSamples], position: int, observed: Observed
    ) -> str:
        """Why a numeric feature has no statistic, or ""."""
        if feature.numeric is None:
            return "the reference has no values of this feature"
        if test.reads_sample and int(self._numeric.sorted.counts[position]) == 0:
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
            observed.append(Observed(valid, nan, values.numel() - valid - nan))
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
        drift_test = CATEGORICAL_TESTS[test]
        reference_frequencies = reference / reference.sum(dim=1, keepdim=True)
        current_frequencies = current / current.sum(dim=1, keepdim=True)
        # The tokens of a row are no independent draws (a row keeps to its topic): a pooled feature is tested
        # at its number of rows, its counts divided by the tokens a row holds. Frequencies are the same.
        tokens = math.prod(self.reference.input.dims)
        per_row = torch.tensor(
            [[tokens if categorical.feature.reduction == "pool" else 1] for categorical in self._categorical],
            dtype=torch.float64,
            device=self.device,
        )
        outcome = drift_test.compute(
            CategoricalSamples(
                reference / per_row,
                current / per_row,
                reference_frequencies,
                current_frequencies,
                self._nulls,
                [categorical.unseen for categorical in self._categorical],
            )
        )
        features = [categorical.feature for categorical in self._categorical]
        labels = [categorical.labels for categorical in self._categorical]
        return self._judged(
            _Tested(
                features=features,
                test=test,
                threshold=drift_test.threshold(self.thresholds),
                minimum_effect=drift_test.minimum_effect,
                outcome=outcome,
                observed=observed,
                gaps=[_categorical_gap(feature, seen) for feature, seen in zip(features, observed, strict=True)],
                notes=[
                    _unseen_note(float(unseen), seen) for unseen, seen in zip(current[:, -1], observed, strict=True)
                ],
                bins=labels,
                reference_frequencies=_unseen_last(reference_frequencies, labels),
                current_frequencies=_unseen_last(current_frequencies, labels),
            )
        )

    def _judged(self, tested: _Tested) -> dict[str, FeatureResult]:
        """The results of one kind's features before the window's verdict: their tests, with what there is to say."""
        outcome = tested.outcome
        missing_tests = self._missing_tests(tested.features, tested.observed)
        results = {}
        for position, feature in enumerate(tested.features):
            gap, bins = tested.gaps[position], tested.bins[position]
            statistic = None if gap else _number(outcome.statistic[position])
            notes = [gap] if gap else []
            if statistic is not None and outcome.notes and outcome.notes[position]:
                notes.append(outcome.notes[position])
            value = TestResult(
                outcome.tests[position] if outcome.tests else tested.test,
                statistic,
                _number(outcome.p_value[position]) if statistic is not None else None,
                tested.threshold,
                tested.threshold if tested.minimum_effect else None,
                statistic if tested.minimum_effect else None,
            )
            missing = missing_tests[position]
            results[feature.name] = feature_result(
                feature,
                [value] if missing is None else [value, missing],
                tested.observed[position],
                notes + tested.notes[position],
                bins,
                _frequencies(tested.reference_frequencies[position], len(bins)),
                _frequencies(tested.current_frequencies[position], len(bins)),
            )
        return results

    def _missing_tests(self, features: list[FeatureProfile], observed: list[Observed]) -> list[TestResult | None]:
        """Per feature, the test of its share of missing values; None where neither side has any (it cannot reject)."""
        reference = torch.tensor(
            [[f.missing, f.count - f.missing] for f in features], dtype=torch.float64, device=self.device
        )
        current = torch.tensor(
            [[o.missing + o.invalid, o.valid] for o in observed], dtype=torch.float64, device=self.device
        )
        outcome = two_by_two(reference, current)
        tests: list[TestResult | None] = []
        for feature, seen, statistic, p_value in zip(
            features, observed, outcome.statistic.tolist(), outcome.p_value.tolist(), strict=True
        ):
            before = feature.missing / feature.count if feature.count else 0.0
            if not (feature.missing or seen.missing or seen.invalid) or not math.isfinite(p_value):
                tests.append(None)
                continue
            shift = abs(seen.missing_fraction - before)
            tests.append(TestResult("missing", statistic, p_value, self.thresholds.p_value, MISSING_SHIFT, shift))
        return tests

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
        # Drifted or not is the window's verdict (verdict.summarise), with the other tests.
        return MultivariateResult(
            "mmd", outcome.statistic, outcome.p_value, False, p_value_is_bound=outcome.p_value_is_bound
        )

    # Results.

    def _without_result(self, feature: FeatureProfile, reason: str) -> FeatureResult:
        test: TestName = self.tests.numeric if feature.kind == "numeric" else self.tests.categorical
        registry = NUMERIC_TESTS if feature.kind == "numeric" else CATEGORICAL_TESTS
        return without_result(feature, test, registry[test].threshold(self.thresholds), reason)

    def _summary(
        self,
        features: list[FeatureResult],
        multivariate: MultivariateResult | None,
        rows: int,
        rows_rejected: int,
        messages: list[str],
    ) -> DriftResult:
        return summarise(features, multivariate, rows, rows_rejected, messages, self.thresholds, self._importances)

    def check_table(self, table: object, known: Collection[str] = ()) -> DriftResult:
        """Test one window of named columns (a pandas DataFrame, a pyarrow Table, a dict of arrays or lists).

        Each feature is read from the column of its name, in any order, encoded as the model input
        holds it (`tables`); extra columns are ignored, and a feature whose column is absent or of
        the wrong kind has no statistic and says why. Nothing in the table raises. Columns that are
        neither the reference's features nor `known` (a reference table's columns not tested) are
        ignored with a note.
        """
        columns = read_columns(table)
        known = [*known, *(feature.name for feature in self.reference.features)]
        window = encode_window(columns, self._features, self.reference.input, known)
        if window.values is None:
            gaps = [self._without_result(f, window.gaps[f.name]) for f in self._features]
            return self._summary(gaps, None, columns.rows, columns.rows, [*self._messages, *window.messages])
        return self._check({self.reference.input.name: window.values}, None, window.gaps, list(window.messages))


def _at_one_precision(values: Tensor, reference: PreparedNumeric) -> tuple[Tensor, SortedColumns]:
    """The window's numeric `values` (rows, features) and their sorted columns, each feature compared with the
    reference at one precision: float32 when either side holds float32 data, float64 when neither does.

    The same decimal value held at float32 on one side and at float64 on the other is two numbers
    (float32(0.1) is 0.10000000149, float32(9.99) is 9.98999977), and compared as they are, every tied
    value falls on the wrong side of the other side's steps and bin edges: prices in float32 windows against
    a float64 reference drifted on every window (ks p ~1e-80). So the finer side is rounded to float32:
    - the reference's values are float32 (a profile training made of float32 features; an integer
      feature): the window's values, float64 here, are rounded to float32;
    - else, the window's values are float32 (a capture, a float32 column): the reference's values and
      bin edges are, where the window's are compared with them (`as_thresholds`); the reference's own
      bin counts stay as they were made.
    Values beyond float32's range, inf and NaN stay as they are (`on_float32_grid`).
    """
    window_float32 = float32_data(values)
    rounded = reference.float32 & ~window_float32
    if bool(rounded.any()):
        columns = values.t()
        values = torch.where(rounded.unsqueeze(1), on_float32_grid(columns), columns).t()
    return values, sort_columns(values, at_float32=window_float32 & ~reference.float32)


def _number(value: Tensor) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _frequencies(row: Tensor, length: int) -> list[float]:
    return [0.0 if math.isnan(value) else value for value in row[:length].tolist()]


def _categorical_gap(feature: FeatureProfile, observed: Observed) -> str:
    """Why a categorical feature has no statistic, or ""."""
    if feature.categorical is None or feature.categorical.cardinality == 0:
        return "the reference has no values of this feature"
    if not feature.categorical.categories:
        return "the reference lists none of this feature's categories: each is too rare in it"
    if observed.valid == 0:
        return "the window has no valid values of this feature"
    return ""


def _unseen_note(unseen: float, observed: Observed) -> list[str]:
    """What a categorical feature's values in the unseen bin call for: nothing, or how many there are."""
    if unseen and observed.valid:
        return [f"{unseen:.0f} values ({unseen / observed.valid:.1%}) are not among the categories the reference lists"]
    return []


def _unseen_last(frequencies: Tensor, labels: list[list[str]]) -> list[Tensor]:
    """Each feature's frequencies (features, bins) in its own bins: its categories, then unseen (the last column)."""
    return [
        torch.cat([frequencies[position, : len(bins) - 1], frequencies[position, -1:]])
        for position, bins in enumerate(labels)
    ]
