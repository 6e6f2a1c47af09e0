"""What a drift check returns, and how its results are judged and summed up.

`FeatureResult` per feature, `MultivariateResult` for all numeric features together, `DriftResult`
per window; `feature_result` judges one feature's statistic against its threshold, `summarise`
the window (the share of drifted features and the severity score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from scaleml_api.profile import FeatureProfile
from scaleml_api.v1alpha1.driftmonitor import Thresholds

TestName = Literal["ks", "psi", "wasserstein", "js", "chi2"]


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
    test: TestName,
    threshold: float,
    statistic: float | None,
    p_value: float | None,
    observed: Observed,
    missing_drift: str,
    notes: list[str],
    bins: list[str],
    reference_frequencies: list[float],
    current_frequencies: list[float],
) -> FeatureResult:
    """One feature's result: drifted when its p-value is below the threshold, or its distance above it,
    or when its share of missing values moved (`missing_drift` says how; "" when it did not)."""
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


def without_result(feature: FeatureProfile, test: TestName, threshold: float, reason: str) -> FeatureResult:
    """A feature that could not be tested at all, and why: no values, bins or drift."""
    return feature_result(feature, test, threshold, None, None, Observed(0, 0, 0), "", [reason], [], [], [])


def summarise(
    features: list[FeatureResult],
    multivariate: MultivariateResult | None,
    rows: int,
    rows_rejected: int,
    messages: list[str],
    thresholds: Thresholds,
) -> DriftResult:
    assessed = [result for result in features if result.statistic is not None or result.drifted]
    drifted = [result.name for result in assessed if result.drifted]
    share = len(drifted) / len(assessed) if assessed else 0.0
    severities = [severity(r.statistic, r.p_value, r.threshold, r.drifted) for r in assessed]
    if multivariate is not None:
        severities.append(
            severity(multivariate.statistic, multivariate.p_value, thresholds.p_value, multivariate.drifted)
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
        drift_detected=(bool(assessed) and share >= thresholds.share_of_drifted_features)
        or (multivariate is not None and multivariate.drifted),
        score=sum(severities) / len(severities) if severities else 0.0,
        messages=messages,
    )


def severity(statistic: float | None, p_value: float | None, threshold: float, drifted: bool) -> float:
    """How far one test went towards drift, in [0, 1] (see DriftResult.score)."""
    if drifted or statistic is None:
        return 1.0 if drifted else 0.0
    if p_value is not None:
        return min(1.0, math.log(p_value) / math.log(threshold)) if p_value > 0 else 1.0
    return min(1.0, statistic / threshold)
