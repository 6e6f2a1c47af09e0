"""Temperature scaling and the accuracy it estimates, on logits whose true probabilities are known."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
from scipy.optimize import minimize_scalar  # type: ignore[import-untyped]
from scipy.special import log_softmax  # type: ignore[import-untyped]

from scaleml_workloads.confidence import estimated_accuracy, expected_calibration_error, softmax
from scaleml_workloads.training.calibration import calibrate, fit_temperature

pytestmark = pytest.mark.workloads


def _draw(rows: int, classes: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Logits that are calibrated as they are, and labels drawn from their softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(rows, classes))
    probabilities = softmax(logits)
    labels = np.array([rng.choice(classes, p=row) for row in probabilities])
    return logits, labels


def _scipy_temperature(logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]) -> float:
    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded", options={"xatol": 1e-9}).x))


@pytest.mark.parametrize("overconfidence", [0.5, 1.0, 3.0])
def test_the_temperature_undoes_known_overconfidence_and_matches_scipy(overconfidence: float) -> None:
    logits, labels = _draw(20_000, 4, seed=1)
    shown = logits * overconfidence

    temperature = fit_temperature(torch.from_numpy(shown), torch.from_numpy(labels))

    assert temperature == pytest.approx(_scipy_temperature(shown, labels), rel=1e-4)
    assert temperature == pytest.approx(overconfidence, rel=0.05)


def test_calibration_lowers_the_error_and_its_confidence_estimates_accuracy_on_fresh_rows() -> None:
    logits, labels = _draw(5000, 3, seed=2)
    overconfident = logits * 2.5

    calibration = calibrate(torch.from_numpy(overconfident), torch.from_numpy(labels))

    assert calibration.ece_before > 0.1
    assert calibration.ece_after < 0.03
    assert calibration.validation_accuracy == pytest.approx(float((logits.argmax(1) == labels).mean()))
    # On rows the fit never saw: the mean calibrated confidence is the accuracy, within sampling error.
    fresh, truth = _draw(4000, 3, seed=3)
    actual = float((fresh.argmax(1) == truth).mean())
    estimate = estimated_accuracy(fresh * 2.5, calibration.temperature)
    assert abs(estimate - actual) < 3 * np.sqrt(actual * (1 - actual) / len(truth)) + 0.01
    # The raw (overconfident) softmax overstates it.
    assert estimated_accuracy(fresh * 2.5, 1.0) > actual + 0.05


def test_the_calibration_error_of_a_hand_made_case() -> None:
    # Two bins used out of 10: confidence 0.9 right 3 times out of 4, confidence 0.6 right 1 time out of 2.
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 2)
    labels = np.array([0, 0, 0, 1, 1, 0])

    ece = expected_calibration_error(probabilities, labels, bins=10)

    assert ece == pytest.approx((4 * abs(0.75 - 0.9) + 2 * abs(0.5 - 0.6)) / 6)
