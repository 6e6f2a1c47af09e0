"""The accuracy of a live window estimated without labels, from the classifier's own captured answers.

Confidence-based performance estimation: each captured answer (OUTPUT__0, the logits) is turned
into calibrated probabilities with the temperature fitted at training time, and the mean of the
largest one over the window is the accuracy the model expects to have had on it. It tracks the
real accuracy while the model's calibration holds on the live data; under a shift the model has
never seen it can stay confident while wrong, so it is one signal next to the drift tests, not a
replacement for labels.

No estimate (and a message saying why, never an exception) for a regression model, a profile
without calibration, or a window without usable captured outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from scaleml_api.profile import Calibration, DataProfile
from scaleml_workloads.confidence import estimated_accuracy

# The captured answer of a ScaleML model (export.formats.OUTPUT_NAME; not imported: that module loads torch).
OUTPUT_NAME: Final = "OUTPUT__0"

REGRESSION: Final = "the model is a regressor: its answers are values, with no confidence to estimate accuracy from"
NOT_CALIBRATED: Final = (
    "the reference profile holds no calibration (a version exported before it existed, or trained with fewer "
    "than 20 validation rows)"
)


@dataclass(frozen=True)
class AccuracyEstimate:
    """One window's estimated accuracy next to the validation accuracy, or why there is none."""

    estimated: float | None
    validation: float | None
    rows: int = 0
    message: str = ""

    def degraded(self, drop: float) -> bool:
        """Whether the estimate is more than `drop` below the validation accuracy (False without one)."""
        if self.estimated is None or self.validation is None:
            return False
        return self.validation - self.estimated > drop


@dataclass(frozen=True)
class AccuracyEstimator:
    """What a reference profile allows: the calibration of a classifier, or the reason it has none."""

    calibration: Calibration | None
    unavailable: str = ""

    @classmethod
    def from_profile(cls, profile: DataProfile) -> AccuracyEstimator:
        if profile.calibration is not None:
            return cls(profile.calibration)
        regression = profile.target is not None and profile.target.task == "regression"
        return cls(None, REGRESSION if regression else NOT_CALIBRATED)

    def estimate(self, window: Mapping[str, npt.NDArray[np.generic]]) -> AccuracyEstimate:
        """The accuracy estimated from the window's captured OUTPUT__0 (rows with any non-finite logit left out)."""
        calibration = self.calibration
        if calibration is None:
            return AccuracyEstimate(None, None, message=self.unavailable)
        validation = calibration.validation_accuracy
        logits = window.get(OUTPUT_NAME)
        if logits is None:
            return AccuracyEstimate(None, validation, message=f"the window's captured responses hold no {OUTPUT_NAME}")
        if logits.ndim != 2 or logits.shape[1] < 2 or logits.dtype.kind != "f":
            return AccuracyEstimate(
                None,
                validation,
                message=f"the captured {OUTPUT_NAME} ({logits.dtype}, rows x {' x '.join(map(str, logits.shape[1:]))})"
                " is not one logit per class",
            )
        finite = np.isfinite(logits).all(axis=1)
        if not finite.any():
            return AccuracyEstimate(None, validation, message=f"no captured {OUTPUT_NAME} row is finite")
        usable = logits[finite].astype(np.float64)
        return AccuracyEstimate(estimated_accuracy(usable, calibration.temperature), validation, rows=int(finite.sum()))
