"""What a drift check returns.

`TestResult` per test (a feature's test of its values, and of its share of missing values),
`FeatureResult` per feature, `MultivariateResult` for all numeric features together, `TopFeature`
for what matters most, `DriftResult` per window. `feature_result` assembles one feature's
results before the window's verdict; `verdict.summarise` corrects the p-values of the window's
tests together and decides every `drifted`, `q_value` and the score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from scaleml_api.profile import FeatureProfile

# "missing": the test of a feature's share of missing values (chi-square on missing and present counts; its
# p-value Fisher's exact one where an expected count is below 5).
TestName = Literal["ks", "psi", "wasserstein", "js", "chi2", "missing"]


@dataclass(frozen=True)
class TestResult:
    """One test of one feature."""

    test: TestName
    statistic: float | None  # None when it could not be computed
    p_value: float | None  # raw, float64 without a floor; None without a statistic
    threshold: float  # the p-value threshold, or for a distance the least distance that counts
    # The least effect that counts, and the test's effect compared with it: a distance against its
    # threshold, the change of the share of missing values against MISSING_SHIFT; None for ks and chi2.
    minimum_effect: float | None = None
    effect: float | None = None
    q_value: float | None = None  # after the window's correction (Benjamini-Hochberg)
    drifted: bool = False  # q_value < pValue and the effect at least its minimum


@dataclass(frozen=True)
class FeatureResult:
    """One feature of one window: its deciding test in test .. q_value, all of its tests in `tests`."""

    name: str
    kind: Literal["numeric", "categorical"]
    # The test that decided: the drifted one with the smallest q-value, else the test of the values
    # (the missing-values test when the values have no statistic).
    test: TestName
    statistic: float | None  # None when it could not be computed (see message)
    p_value: float | None  # raw p-value of that test
    threshold: float
    drifted: bool  # any of its tests drifted
    rows: int  # valid values in the window (observations, for a pooled feature)
    missing_fraction: float  # missing or invalid, in the window
    reference_missing_fraction: float
    message: str  # "" or why there is no result / what was odd / why it drifted
    # For plots, the same bins for both: numeric, the reference histogram's bins framed by one
    # below and one above; categorical, the listed categories and "(unseen)".
    bins: list[str]
    reference_frequencies: list[float]
    current_frequencies: list[float]
    q_value: float | None = None  # adjusted p-value of the deciding test
    tests: list[TestResult] = field(default_factory=list)
    importance: float = 1.0  # weight in the score, in [0, 1]: importance relative to the most important feature
    evidence: float = 0.0  # in [0, 1], from the q-values (see score.evidence)
    notes: list[str] = field(default_factory=list)  # what the message says before the verdict


@dataclass(frozen=True)
class MultivariateResult:
    """The test of all numeric features together."""

    test: Literal["mmd"]
    statistic: float
    # A permutation p-value, (1 + permutations at least as large) / (1 + permutations): never below
    # 1 / (1 + permutations). `p_value_is_bound`: no permutation reached the statistic, so the
    # p-value is at most this (the report says "≤").
    p_value: float
    drifted: bool
    q_value: float | None = None
    p_value_is_bound: bool = False

    def p_value_text(self) -> str:
        """The p-value as printed: "≤ p" when no permutation reached the statistic."""
        return f"≤ {number(self.p_value)}" if self.p_value_is_bound else number(self.p_value)


def number(value: float | None, digits: int = 4) -> str:
    """A statistic as the results print it: `digits` significant digits, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}g}"


@dataclass(frozen=True)
class TopFeature:
    """A feature that counts in the score: importance (relative weight) * evidence."""

    name: str
    importance: float
    evidence: float

    @property
    def contribution(self) -> float:
        return self.importance * self.evidence


@dataclass(frozen=True)
class DriftResult:
    """One window against the reference."""

    features: list[FeatureResult]
    multivariate: MultivariateResult | None
    rows: int  # rows in the window
    rows_rejected: int  # rows that could not be used at all (wrong shape, every value missing or invalid, ...)
    drifted_features: list[str]
    share_drifted: float  # drifted features / features assessed (with a statistic, or a missing-values test)
    # Any test drifted after the correction (see verdict), unless thresholds.shareOfDriftedFeatures
    # is set: then at least that share of the features drifted, or the multivariate test did.
    drift_detected: bool
    # In [0, 1]: importance * evidence of the significant tests combined, 1 - prod(1 - importance *
    # evidence), with the strongest of the others; evidence from the q-values (see `score`); near 0 without drift.
    score: float
    messages: list[str]  # window-level problems: window smaller than asked, input missing or misshapen, ...
    verdict: str = ""  # one sentence: why the window did or did not drift
    kept_quiet_by: str = ""  # the rule that kept a window with drifted features quiet ("shareOfDriftedFeatures"), or ""
    tests: int = 0  # tests in the window's family (corrected together)
    top_features: list[TopFeature] = field(default_factory=list)  # by importance * evidence, largest first


@dataclass(frozen=True)
class Observed:
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


def feature_result(
    feature: FeatureProfile,
    tests: list[TestResult],
    observed: Observed,
    notes: list[str],
    bins: list[str],
    reference_frequencies: list[float],
    current_frequencies: list[float],
) -> FeatureResult:
    """One feature's result before the window's verdict: its tests, the test of its values first."""
    if observed.invalid:
        kinds = "±inf" if feature.kind == "numeric" else "no category code"
        notes = [*notes, f"{observed.invalid} values are {kinds} (counted as missing)"]
    first = tests[0]
    return FeatureResult(
        name=feature.name,
        kind=feature.kind,
        test=first.test,
        statistic=first.statistic,
        p_value=first.p_value,
        threshold=first.threshold,
        drifted=False,
        rows=observed.valid,
        missing_fraction=observed.missing_fraction,
        reference_missing_fraction=feature.missing / feature.count if feature.count else 0.0,
        message="; ".join(notes),
        bins=bins,
        reference_frequencies=reference_frequencies,
        current_frequencies=current_frequencies,
        tests=tests,
        importance=1.0,
        notes=notes,
    )


def without_result(feature: FeatureProfile, test: TestName, threshold: float, reason: str) -> FeatureResult:
    """A feature that could not be tested at all, and why: no values, bins or drift."""
    return feature_result(feature, [TestResult(test, None, None, threshold)], Observed(0, 0, 0), [reason], [], [], [])
