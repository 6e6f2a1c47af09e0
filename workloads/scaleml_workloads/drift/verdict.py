"""The window's verdict: every test of the window corrected together, at one stated error rate.

A window runs many tests: one per feature on its values, one per feature on its share of missing
values (where either side has missing values; elsewhere that test could not reject), and the
multivariate test. Each alone false-alarms at `thresholds.pValue`; taken at that level one by
one, 50 features would flag nearly every second window without any drift (1 - 0.99^50 = 0.39).

So the p-values of all of a window's tests form one family, adjusted by Benjamini-Hochberg: the
q-value of the i-th smallest of m p-values is min over j >= i of p_(j) m / j, and a test is
significant when its q-value is below pValue. Why this correction:

- Under no drift at all (every null true), Benjamini-Hochberg rejects anything with probability
  at most its false discovery rate, pValue (for independent or positively dependent tests): a
  window without drift is flagged at most at the rate pValue, whatever the number of features.
- When drift is real it rejects more than Holm-Bonferroni, which holds every test to pValue / m
  in turn: with k features moved, BH's k-th smallest p-value need only be below k pValue / m.
- The multivariate test joins the same family at the same level: one error rate for the window,
  no level split to choose. Its permutation p-value is never below 1 / (permutations + 1), so on
  its own it can carry a window only when that is below pValue / m; with features moved it adds
  its evidence at their ranks.

A test drifts when its q-value is below pValue and its effect is at least the least effect that
counts: a distance test's configured distance (psi, js, wasserstein), a change of the share of
missing values of MISSING_SHIFT. A feature drifts when any of its tests does; the window drifts
when any feature or the multivariate test does. `thresholds.shareOfDriftedFeatures` is an opt-in
quorum, off by default: when set, the window drifts only when at least that share of the features
tested drift, or the multivariate test does; a window it keeps quiet says so (`kept_quiet_by`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from scaleml_api.v1alpha1.driftmonitor import Thresholds
from scaleml_workloads.drift.results import (
    DriftResult,
    FeatureResult,
    MultivariateResult,
    TestResult,
    number,
)
from scaleml_workloads.drift.score import evidence, relative_importance, window_score

SHARE_RULE = "shareOfDriftedFeatures"


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """The q-values of `p_values` (Benjamini-Hochberg adjusted p-values, at most 1), in their order."""
    count = len(p_values)
    if count == 0:
        return []
    values = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    scaled = values[order] * count / np.arange(1, count + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    q_values = np.empty(count)
    q_values[order] = adjusted
    return [float(q) for q in q_values]


def summarise(
    features: list[FeatureResult],
    multivariate: MultivariateResult | None,
    rows: int,
    rows_rejected: int,
    messages: list[str],
    thresholds: Thresholds,
    importances: Mapping[str, float | None],
) -> DriftResult:
    """The window's result: its tests corrected together, each feature and the window judged, the score."""
    alpha = thresholds.p_value
    family = [
        (f, t, p)
        for f, feature in enumerate(features)
        for t, test in enumerate(feature.tests)
        if (p := test.p_value) is not None and math.isfinite(p)
    ]
    p_values = [p for _, _, p in family]
    if multivariate is not None:
        p_values.append(multivariate.p_value)
    q_values = benjamini_hochberg(p_values)
    adjusted = {(f, t): q for (f, t, _), q in zip(family, q_values[: len(family)], strict=True)}
    weights = relative_importance([importances.get(feature.name) for feature in features])
    judged = [
        _judged(feature, [adjusted.get((f, t)) for t in range(len(feature.tests))], alpha, weights[f])
        for f, feature in enumerate(features)
    ]
    if multivariate is not None:
        q = q_values[-1]
        multivariate = dataclasses.replace(multivariate, q_value=q, drifted=q < alpha)
    assessed = [result for result in judged if any(_tested(test) for test in result.tests)]
    drifted = [result.name for result in judged if result.drifted]
    share = len(drifted) / len(assessed) if assessed else 0.0
    multivariate_drifted = multivariate is not None and multivariate.drifted
    quorum = thresholds.share_of_drifted_features
    detected = bool(drifted) or multivariate_drifted
    if quorum is not None:
        # quorum > 0: a share that reaches it has drifted features.
        detected = share >= quorum or multivariate_drifted
    kept_quiet_by = SHARE_RULE if drifted and not detected else ""
    if not assessed:
        messages.append("no feature could be tested")
    score, top = window_score(judged, multivariate, alpha)
    return DriftResult(
        features=judged,
        multivariate=multivariate,
        rows=rows,
        rows_rejected=rows_rejected,
        drifted_features=drifted,
        share_drifted=share,
        drift_detected=detected,
        score=score,
        messages=messages,
        verdict=_verdict(judged, multivariate, len(p_values), alpha, share, quorum, kept_quiet_by),
        kept_quiet_by=kept_quiet_by,
        tests=len(p_values),
        top_features=top,
    )


def _tested(test: TestResult) -> bool:
    return test.p_value is not None and math.isfinite(test.p_value)


def _judged(feature: FeatureResult, q_values: list[float | None], alpha: float, importance: float) -> FeatureResult:
    """A feature with its tests' q-values, whether each drifted, the deciding test and its evidence."""
    tests = [
        dataclasses.replace(test, q_value=q, drifted=q is not None and q < alpha and _large_enough(test))
        for test, q in zip(feature.tests, q_values, strict=True)
    ]
    drifted = [test for test in tests if test.drifted]
    value = tests[0]
    # A drifted test has a q-value.
    deciding = min(drifted, key=lambda test: test.q_value or 0.0) if drifted else value
    if value.statistic is None and not drifted and len(tests) > 1 and tests[1].statistic is not None:
        deciding = tests[1]
    notes = list(feature.notes)
    for test in drifted:
        if test.test == "missing":
            notes.append(
                f"missing in {feature.missing_fraction:.1%} of the window, {feature.reference_missing_fraction:.1%} "
                f"of the reference (chi-square p {number(test.p_value, 3)}, q {number(test.q_value, 3)})"
            )
    if deciding is not value and value.statistic is not None:
        notes.append(f"the values present: {value.test} {number(value.statistic, 3)}, p {number(value.p_value, 3)}")
    if value.statistic is not None and not value.drifted and value.q_value is not None and value.q_value < alpha:
        statistic = number(value.statistic, 3)
        notes.append(f"significant, but {value.test} {statistic} is below its threshold {value.threshold:g}")
    return dataclasses.replace(
        feature,
        test=deciding.test,
        statistic=deciding.statistic,
        p_value=deciding.p_value,
        threshold=deciding.threshold,
        q_value=deciding.q_value,
        drifted=bool(drifted),
        message="; ".join(notes),
        tests=tests,
        importance=importance,
        evidence=max((evidence(test, alpha) for test in tests), default=0.0),
    )


def _large_enough(test: TestResult) -> bool:
    if test.minimum_effect is None:
        return True
    return test.effect is not None and test.effect >= test.minimum_effect


def _verdict(
    features: list[FeatureResult],
    multivariate: MultivariateResult | None,
    tests: int,
    alpha: float,
    share: float,
    quorum: float | None,
    kept_quiet_by: str,
) -> str:
    """One sentence: which tests decided, under which rule."""
    drifted = [f for f in features if f.drifted]
    names = ", ".join(f"{f.name} ({f.test}, q {number(f.q_value, 3)})" for f in drifted)
    level = f"Benjamini-Hochberg over {tests} tests at {alpha:g}"
    if kept_quiet_by:
        return (
            f"not counted as drift: {names} drifted ({level}), {share:.0%} of the features tested, below "
            f"thresholds.{SHARE_RULE} {quorum:.0%}"
        )
    parts = []
    if drifted:
        parts.append(f"drift in {names}")
    if multivariate is not None and multivariate.drifted:
        parts.append(f"the multivariate test drifted (q {number(multivariate.q_value, 3)})")
    if parts:
        return "; ".join(parts) + f" ({level})"
    # Every test's, not only the deciding ones': a feature's missing values may be nearer to drift than its values.
    q_values = [test.q_value for f in features for test in f.tests if test.q_value is not None]
    if multivariate is not None and multivariate.q_value is not None:
        q_values.append(multivariate.q_value)
    smallest = f", smallest q {number(min(q_values), 3)}" if q_values else ""
    short = [
        f"{f.name} ({test.test})"
        for f in features
        for test in f.tests
        if test.q_value is not None and test.q_value < alpha and not test.drifted
    ]
    if short:
        return f"no drift: significant but below their least effect: {', '.join(short)} ({level}{smallest})"
    return f"no drift: no test significant ({level}{smallest})"
