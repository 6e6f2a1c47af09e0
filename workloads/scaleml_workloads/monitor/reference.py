"""What the monitor compares windows with: the reference profile's sample of rows, or its aggregates alone.

A profile written with the TrainingJob's `spec.output.profileSample: none` keeps no row of the
training data. The per-feature tests that read raw reference values (ks, psi, wasserstein) then
read values spread evenly over each feature's quantiles instead: as many as the sample would have
held (the feature's values, at most MAX_SAMPLE_ROWS), the value at level (i + 0.5) / n
interpolated between the profile's quantiles at 1% steps. Their distribution function is within
0.01 of the training data's everywhere (each step holds 1% of the values), so a statistic moves
by at most that much against the one a sample would give. The multivariate test needs rows
together, which quantiles of single features cannot give: it is skipped, and every result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from scaleml_api.profile import MAX_SAMPLE_ROWS, DataProfile
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec, Tests, Thresholds
from scaleml_workloads.drift.detector import DriftDetector
from scaleml_workloads.drift.reference import Reference

Floats = npt.NDArray[np.float64]

AGGREGATES_ONLY: Final = (
    "the reference profile keeps no rows of the training data (its TrainingJob's spec.output.profileSample is "
    "none): numeric features are compared with values spread over the training data's quantiles"
)
MULTIVARIATE_SKIPPED: Final = "the multivariate (MMD) test is skipped: it needs reference rows, which the profile lacks"


def quantile_values(profile: DataProfile) -> dict[str, Floats]:
    """Per numeric feature, values spread over its quantiles (see the module), NaN-padded to one length."""
    columns: dict[str, Floats] = {}
    for feature in profile.features:
        summary = feature.numeric
        if feature.kind != "numeric" or summary is None:
            continue
        count = min(feature.count - feature.missing, MAX_SAMPLE_ROWS)
        levels = (np.arange(count, dtype=np.float64) + 0.5) / max(count, 1)
        columns[feature.name] = np.interp(levels, summary.quantile_levels, summary.quantiles)
    rows = max((len(column) for column in columns.values()), default=0)
    return {name: np.pad(column, (0, rows - len(column)), constant_values=np.nan) for name, column in columns.items()}


def detector_for(profile: DataProfile, spec: DriftMonitorSpec) -> tuple[DriftDetector, list[str]]:
    """The detector of a DriftMonitor's spec against `profile`, and what its every result must say of it."""
    return profile_detector(profile, spec.tests, spec.thresholds, spec.features)


def profile_detector(
    profile: DataProfile, tests: Tests, thresholds: Thresholds, features: Sequence[str] = ()
) -> tuple[DriftDetector, list[str]]:
    """A detector against `profile` (its sample of rows, or its aggregates alone), and what every result must say."""
    if profile.sample.rows > 0:
        return DriftDetector.from_profile(profile, tests, thresholds, features), []
    notes = [AGGREGATES_ONLY]
    if tests.multivariate != "none":
        notes.append(MULTIVARIATE_SKIPPED)
        tests = tests.model_copy(update={"multivariate": "none"})
    reference = Reference(profile.input, tuple(profile.features), quantile_values(profile))
    return DriftDetector(reference, tests, thresholds, features), notes
