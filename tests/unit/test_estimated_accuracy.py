"""The monitor's estimate of a window's accuracy from captured logits, and why a window may have none."""

from __future__ import annotations

import numpy as np
import pytest

from scaleml_api.profile import Calibration
from scaleml_workloads.monitor.accuracy import NOT_CALIBRATED, OUTPUT_NAME, AccuracyEstimator

CALIBRATION = Calibration(temperature=2.0, rows=500, validation_accuracy=0.9, ece_before=0.08, ece_after=0.02, bins=15)


def test_the_estimate_is_the_mean_calibrated_confidence_of_the_finite_rows() -> None:
    logits = np.array([[4.0, 0.0], [0.0, 2.0], [np.nan, 1.0], [1.0, 1.0]], dtype=np.float32)

    estimate = AccuracyEstimator(CALIBRATION).estimate({OUTPUT_NAME: logits})

    # softmax at temperature 2: max probabilities 1/(1+e^-2), 1/(1+e^-1), 1/2.
    expected = np.mean([1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-1.0)), 0.5])
    assert estimate.estimated == pytest.approx(expected)
    assert estimate.rows == 3
    assert estimate.validation == 0.9
    assert estimate.message == ""
    assert estimate.degraded(0.05)
    assert not estimate.degraded(0.4)


@pytest.mark.parametrize(
    ("window", "says"),
    [
        ({}, "hold no OUTPUT__0"),
        ({OUTPUT_NAME: np.zeros((5, 1), dtype=np.float32)}, "not one logit per class"),
        ({OUTPUT_NAME: np.zeros(5, dtype=np.float32)}, "not one logit per class"),
        ({OUTPUT_NAME: np.array([b"a", b"b"])}, "not one logit per class"),
        ({OUTPUT_NAME: np.full((4, 3), np.inf, dtype=np.float32)}, "no captured OUTPUT__0 row is finite"),
    ],
)
def test_a_window_without_usable_outputs_has_no_estimate_and_says_why(window: dict[str, np.ndarray], says: str) -> None:  # type: ignore[type-arg]
    estimate = AccuracyEstimator(CALIBRATION).estimate(window)

    assert estimate.estimated is None
    assert says in estimate.message
    assert not estimate.degraded(0.01)


def test_without_calibration_there_is_no_estimate() -> None:
    estimate = AccuracyEstimator(None, NOT_CALIBRATED).estimate({OUTPUT_NAME: np.zeros((3, 2), dtype=np.float32)})

    assert (estimate.estimated, estimate.validation, estimate.message) == (None, None, NOT_CALIBRATED)
