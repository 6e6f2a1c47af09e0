"""A classifier's confidence from its logits, with numpy alone: training calibrates it, the monitor reads it.

The confidence of an answer is its largest softmax probability. Calibrated (see
training.calibration), its mean over rows estimates the accuracy on those rows without their
labels: confidence-based performance estimation.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

ECE_BINS: Final = 15


def expected_calibration_error(
    probabilities: npt.NDArray[np.float64], target: npt.NDArray[np.int64], bins: int = ECE_BINS
) -> float:
    """Row-weighted mean over equal-width bins of the top probability of |accuracy - mean confidence|."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == target
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 cannot occur (it is at least 1/K).
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
    return total / len(target)


def softmax(logits: npt.NDArray[np.floating[Any]], temperature: float = 1.0) -> npt.NDArray[np.float64]:
    """Row-wise softmax of logits / temperature in float64, stable for large logits."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return result


def estimated_accuracy(logits: npt.NDArray[np.floating[Any]], temperature: float) -> float:
    """The mean calibrated confidence of the rows of `logits`: the accuracy they are expected to have."""
    return float(softmax(logits, temperature).max(axis=1).mean())
