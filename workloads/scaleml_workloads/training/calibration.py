"""Temperature scaling of a classifier's confidence on its validation rows (Guo et al., 2017).

One number T divides the logits; it is fitted to minimise the negative log-likelihood of the
validation labels, which leaves every prediction (the argmax) as it is and makes the largest
softmax probability mean what it says: of the rows answered with confidence 0.8, about 80% right.
The monitor's estimate of live accuracy without labels (confidence-based performance estimation)
is the mean of that calibrated confidence over a window, so it is only as good as this fit.

T is fitted on log T (it stays positive) with L-BFGS in float64. Regression models output a value,
not a distribution over answers: they get no calibration.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn

from scaleml_api.profile import Calibration
from scaleml_workloads.confidence import ECE_BINS, expected_calibration_error, softmax
from scaleml_workloads.training.inference import predict

# Validation rows the temperature is fitted on, at most: a seeded subsample beyond it (the fit is one number).
MAX_ROWS: Final = 100_000
# Fewer validation rows fit no temperature worth keeping: it would follow a handful of answers.
MIN_ROWS: Final = 20


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the cross-entropy of softmax(logits / T) against `target`."""
    logits, target = logits.double(), target.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), target)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimiser.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.detach().exp())


def calibrate(logits: torch.Tensor, target: torch.Tensor) -> Calibration:
    """The temperature of these validation logits, with the accuracy and the ECE before and after it."""
    temperature = fit_temperature(logits, target)
    raw = logits.double().numpy()
    labels = target.long().numpy()
    return Calibration(
        temperature=temperature,
        rows=len(labels),
        validation_accuracy=float((raw.argmax(axis=1) == labels).mean()),
        ece_before=expected_calibration_error(softmax(raw), labels),
        ece_after=expected_calibration_error(softmax(raw, temperature), labels),
        bins=ECE_BINS,
    )


def validation_calibration(
    model: nn.Module,
    features: npt.NDArray[np.float32] | npt.NDArray[np.int64],
    target: npt.NDArray[np.int64] | npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    *,
    seed: int,
    device: torch.device,
) -> Calibration | None:
    """The calibration of a classifier on its validation `rows` (at most MAX_ROWS of them); None with too few."""
    if len(rows) < MIN_ROWS:
        return None
    if len(rows) > MAX_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=MAX_ROWS, replace=False))
    logits = predict(model, torch.from_numpy(features[rows]), device)
    return calibrate(logits, torch.from_numpy(target[rows]))
