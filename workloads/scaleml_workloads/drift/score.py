"""The window's drift score: each feature's evidence of drift, weighted by its importance to the model.

Evidence of one test, in [0, 1], from its q-value (the p-value after the window's correction, so
that noise across many features does not add up). Significant (q < pValue): ln(q) / (2 ln pValue),
from 0.5 at q = pValue to 1 at q = pValue² and below. Not significant: 0.5 (ln q / ln pValue)²,
which meets it at pValue and is near 0 for the q-values of noise (0.01 at q = 0.5 and pValue =
0.01). A distance or a missing-values test also scales it by how much of its least effect it
reached, capped at 1; one that fell short of it did not drift however small its q-value, and
counts at most as a test at q = pValue would, so that only a drifted test reaches 0.5. A feature's
evidence is that of its strongest test.

Importance: the profile's permutation importance of each feature, relative to the most important
feature's (in [0, 1]; negative importances, which only chance makes, count as 0). A feature whose
importance is unknown counts fully, and when no feature has a positive importance all count
fully (uniform weights). The multivariate test counts with the mean weight of the numeric features.

Score, in [0, 1]: the drifted features (and the multivariate test when it drifted) combine as
1 - prod(1 - weight * evidence), several drifted features scoring more than one; the others count
only by the strongest of them, so that noise spread over many features does not add up. It never
decreases when any evidence grows: 1 when the most important feature drifted beyond doubt, near 0
without drift, little for a drift of a feature the model ignores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from scaleml_workloads.drift.results import FeatureResult, MultivariateResult, TestResult, TopFeature

# Features listed in a window's top features, at most, and the least importance * evidence listed.
TOP_FEATURES: Final = 5
TOP_CONTRIBUTION: Final = 0.05
# The evidence of a q-value equal to pValue, where significance begins.
_AT_ALPHA: Final = 0.5


def evidence(test: TestResult, alpha: float) -> float:
    """How strongly one test shows drift, in [0, 1] (see the module)."""
    strength = _q_evidence(test.q_value, alpha)
    return (strength if test.drifted else min(strength, _AT_ALPHA)) * _effect_share(test)


def _q_evidence(q_value: float | None, alpha: float) -> float:
    if q_value is None:
        return 0.0
    if q_value <= 0:
        return 1.0
    ratio = math.log(q_value) / math.log(alpha)
    return min(1.0, ratio / 2) if q_value < alpha else 0.5 * min(1.0, ratio) ** 2


def _effect_share(test: TestResult) -> float:
    if test.minimum_effect is None:
        return 1.0
    if test.effect is None:
        return 0.0
    return min(1.0, test.effect / test.minimum_effect)


def relative_importance(importances: Sequence[float | None]) -> list[float]:
    """Weights in [0, 1]: each importance over the largest (see the module)."""
    largest = max((value for value in importances if value is not None), default=0.0)
    if largest <= 0:
        return [1.0] * len(importances)
    return [1.0 if value is None else max(value, 0.0) / largest for value in importances]


def window_score(
    features: list[FeatureResult], multivariate: MultivariateResult | None, alpha: float
) -> tuple[float, list[TopFeature]]:
    """The window's score and its top features by importance * evidence (see the module)."""
    weighted = [(feature.importance * feature.evidence, feature.drifted) for feature in features]
    if multivariate is not None:
        numeric = [feature.importance for feature in features if feature.kind == "numeric"]
        weight = sum(numeric) / len(numeric) if numeric else 1.0
        q_value = multivariate.q_value
        weighted.append((weight * _q_evidence(q_value, alpha), multivariate.drifted))
    remaining = 1.0 - max((value for value, significant in weighted if not significant), default=0.0)
    for value, significant in weighted:
        if significant:
            remaining *= 1.0 - value
    ranked = sorted(features, key=lambda feature: feature.importance * feature.evidence, reverse=True)
    top = [
        TopFeature(feature.name, feature.importance, feature.evidence)
        for feature in ranked[:TOP_FEATURES]
        if feature.importance * feature.evidence >= TOP_CONTRIBUTION
    ]
    return min(1.0, max(0.0, 1.0 - remaining)), top
