"""The window's correction and the numbers at the edges, against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats  # type: ignore[import-untyped]

from scaleml_api.v1alpha1 import driftmonitor as monitoring
from scaleml_workloads.drift.comparison import compare
from scaleml_workloads.drift.statistics import chi2_sf, ks_p_value
from scaleml_workloads.drift.verdict import benjamini_hochberg


def test_q_values_are_scipys_benjamini_hochberg() -> None:
    rng = np.random.default_rng(0)
    p_values = np.concatenate([rng.random(40), rng.random(10) * 1e-4, [1.0, 0.0, 1e-300]])
    assert benjamini_hochberg(list(p_values)) == pytest.approx(list(stats.false_discovery_control(p_values)))
    assert benjamini_hochberg([]) == []


def test_a_window_without_drift_is_flagged_at_the_level_by_the_correction() -> None:
    """Under the global null, any q-value below alpha happens at rate alpha: independent uniform p-values."""
    rng = np.random.default_rng(1)
    trials, alpha = 4000, 0.05
    flagged = sum(min(benjamini_hochberg(list(rng.random(50)))) < alpha for _ in range(trials))
    assert abs(flagged / trials - alpha) < 3.5 * np.sqrt(alpha * (1 - alpha) / trials)


def test_a_significant_test_short_of_its_least_effect_does_not_score_as_drift() -> None:
    rng = np.random.default_rng(17)
    reference = {"a": rng.normal(size=5000), "b": rng.normal(size=5000)}
    # 4% missing where the reference has none: beyond doubt, yet under the least change of missing values that counts.
    window = {name: np.r_[rng.normal(size=4800), np.full(200, np.nan)] for name in reference}

    result = compare(reference, window, tests=monitoring.Tests(multivariate="none"))

    missing = [test for feature in result.features for test in feature.tests if test.test == "missing"]
    assert all(test.q_value is not None and test.q_value < 0.01 and not test.drifted for test in missing)
    assert not result.drift_detected
    assert all(feature.evidence < 0.5 for feature in result.features)
    # Features that did not drift count by the strongest alone, never combined as drifted ones are.
    assert result.score == pytest.approx(max(feature.importance * feature.evidence for feature in result.features))
    smallest = min(test.q_value for test in missing if test.q_value is not None)
    assert result.verdict.startswith("no drift: significant but below their least effect: a (missing), b (missing)")
    assert f"smallest q {smallest:.3g}" in result.verdict


@pytest.mark.parametrize(
    ("n1", "n2", "d"),
    [(5000, 3000, 0.1), (5000, 3000, 0.2), (5000, 1000, 0.3), (4000, 2500, 0.15)],
)
def test_kolmogorov_smirnov_p_values_have_no_floor(n1: int, n2: int, d: float) -> None:
    """Far below 2^-41 (the floor the exact count of unequal samples had), as SciPy's asymptotic tail."""
    p_value = float(ks_p_value(torch.tensor([d], dtype=torch.float64), torch.tensor([n1]), torch.tensor([n2]))[0])
    expected = stats.kstwo.sf(d, round(n1 * n2 / (n1 + n2)))
    assert expected < 1e-13
    assert p_value == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("statistic", "dof"), [(300.0, 3), (80.0, 1), (60.0, 2), (700.0, 40)])
def test_chi_square_p_values_have_no_floor(statistic: float, dof: int) -> None:
    p_value = float(chi2_sf(torch.tensor([statistic], dtype=torch.float64), torch.tensor([dof]))[0])
    expected = stats.chi2.sf(statistic, dof)
    assert expected < 1e-13
    assert p_value == pytest.approx(expected, rel=1e-9)
