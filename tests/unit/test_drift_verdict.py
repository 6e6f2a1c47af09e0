"""The window's correction and the numbers at the edges, against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats  # type: ignore[import-untyped]

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
