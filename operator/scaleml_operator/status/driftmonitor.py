"""The operator's part of a DriftMonitor's status: is the monitor running, and the retraining verdict (pure).

The monitor pod writes the drift results itself (lastCheckTime, driftDetected, driftScore, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scaleml_operator.api.conditions import DRIFT_DETECTED, READY, RETRAINING, ConditionStatus
from scaleml_operator.api.modeldeployment import Waiting
from scaleml_operator.status.conditions import Conditions


def observed(
    status: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any] | None,
    waiting: Waiting | None,
    reference_version: int | None,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Status fields to patch from the monitor's Deployment (None: not created yet)."""
    if waiting is not None:
        ready, reason, message = False, waiting.reason, waiting.message
    elif deployment is None:
        ready, reason, message = False, "Creating", "Creating the monitor's Deployment."
    elif (deployment.get("status") or {}).get("availableReplicas"):
        ready, reason, message = True, "MonitorRunning", "The monitor is running."
    else:
        ready, reason, message = False, "MonitorStarting", "The monitor's pod is not ready yet."
    conditions = Conditions(status.get("conditions", []), generation=generation, now=now).mark(
        READY, ready, reason, message
    )
    patch: dict[str, Any] = {"conditions": conditions}
    if reference_version is not None:
        patch["referenceVersion"] = reference_version
    return patch


def retraining(
    status: Mapping[str, Any], *, active: bool, reason: str, message: str, generation: int | None, now: datetime
) -> list[dict[str, Any]]:
    """The conditions with Retraining set: True while a retraining TrainingJob runs."""
    return Conditions(status.get("conditions", []), generation=generation, now=now).mark(
        RETRAINING, active, reason, message
    )


def drift_condition(status: Mapping[str, Any], *, generation: int | None, now: datetime) -> list[dict[str, Any]]:
    """The conditions with DriftDetected set from the results the monitor wrote.

    The monitor writes plain fields only: a merge patch of `conditions` would replace the
    operator's. The condition is derived here, for `kubectl wait` and Argo CD.
    """
    value: ConditionStatus
    if status.get("driftDetected") is None:
        value, reason, message = "Unknown", "NotChecked", "No window has been tested yet."
    elif status["driftDetected"]:
        features = ", ".join(status.get("driftedFeatures") or []) or "the multivariate test"
        windows = status.get("consecutiveDriftedWindows") or 1
        value, reason = "True", "DriftDetected"
        message = f"Drift in {features}; score {status.get('driftScore', 0):.2f}; {windows} window(s) in a row."
    else:
        value, reason, message = (
            "False",
            "NoDrift",
            f"The last window ({status.get('windowSize', 0)} rows) did not drift.",
        )
    return Conditions(status.get("conditions", []), generation=generation, now=now).mark(
        DRIFT_DETECTED, value, reason, message
    )
