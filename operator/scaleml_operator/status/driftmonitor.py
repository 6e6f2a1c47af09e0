"""The operator's part of a DriftMonitor's status: is the monitor running, and the retraining verdict (pure).

The monitor pod writes the drift results itself (lastCheckTime, driftDetected, driftScore, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scaleml_api.conditions import CREATING, READY, ConditionStatus, Waiting
from scaleml_api.v1alpha1.driftmonitor import (
    CHILD_NOT_APPLIED,
    CUSTOM_MODEL_NOT_ALLOWED,
    DRIFT_DETECTED,
    DRIFT_FOUND,
    INVALID_OVERRIDES,
    MONITOR_RUNNING,
    MONITOR_STARTING,
    NO_DRIFT,
    NO_SOURCE_TRAINING_JOB,
    NOT_CHECKED,
    OVERRIDES_EXCEED_SOURCE,
    RETRAIN_REJECTED,
    RETRAIN_TRIGGERED,
    RETRAINING,
)
from scaleml_operator.status.acceptance import applied_events, not_applied
from scaleml_operator.status.conditions import Conditions, Event, find_condition

# Retraining reasons that need a person: the policy wants a job and cannot make one.
_REFUSED = frozenset(
    {INVALID_OVERRIDES, NO_SOURCE_TRAINING_JOB, OVERRIDES_EXCEED_SOURCE, CUSTOM_MODEL_NOT_ALLOWED, RETRAIN_REJECTED}
)


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
    # A refused child (its Deployment, or the Service Prometheus scrapes) leaves the monitor short of
    # what the spec asks: never Ready so, whether or not its pod runs.
    missing = not_applied(status)
    running = deployment is not None and bool((deployment.get("status") or {}).get("availableReplicas"))
    if waiting is not None:
        ready, reason, message = False, waiting.reason, waiting.message
    elif missing is not None:
        state = "The monitor is running" if running else "The monitor is not running"
        ready, reason, message = False, CHILD_NOT_APPLIED, f"{state}, and a child is not as the spec asks: {missing}"
    elif deployment is None:
        ready, reason, message = False, CREATING, "Creating the monitor's Deployment."
    elif running:
        ready, reason, message = True, MONITOR_RUNNING, "The monitor is running."
    else:
        ready, reason, message = False, MONITOR_STARTING, "The monitor's pod is not ready yet."
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


def retrained(
    status: Mapping[str, Any],
    verdict: tuple[bool, str, str],
    *,
    last: tuple[str, str, str] | None,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """The retraining step's part of the status: Retraining and DriftDetected, and lastRetrain* for the last job.

    `verdict` is the Retraining condition (active, reason, message); `last` the newest retraining
    TrainingJob there is (name, creation time, and what persisted to call for it: drift or
    degradation), made this time or before. The lastRetrain* fields report it, written back whatever
    else they were: the monitor's pod may write them too, and nothing reads them back.
    """
    active, reason, message = verdict
    conditions = retraining(status, active=active, reason=reason, message=message, generation=generation, now=now)
    patch: dict[str, Any] = {
        "conditions": drift_condition({**status, "conditions": conditions}, generation=generation, now=now)
    }
    if last is not None:
        name, created, rule = last
        report = {"lastRetrainJob": name, "lastRetrainTime": created, "lastRetrainRule": rule}
        if status.get("lastRetrainJob") != name:
            patch.update(report, retrainsTriggered=int(status.get("retrainsTriggered") or 0) + 1)
        elif any(status.get(field) != value for field, value in report.items()):
            patch.update(report)
    return patch


def drift_condition(status: Mapping[str, Any], *, generation: int | None, now: datetime) -> list[dict[str, Any]]:
    """The conditions with DriftDetected set from the results the monitor wrote.

    The monitor writes plain fields only: a merge patch of `conditions` would replace the
    operator's. The condition is derived here, for `kubectl wait` and Argo CD.
    """
    value: ConditionStatus
    if status.get("driftDetected") is None:
        value, reason, message = "Unknown", NOT_CHECKED, "No window has been tested yet."
    elif status["driftDetected"]:
        features = ", ".join(status.get("driftedFeatures") or []) or "the multivariate test"
        windows = status.get("consecutiveDriftedWindows") or 1
        value, reason = "True", DRIFT_FOUND
        message = f"Drift in {features}; score {status.get('driftScore', 0):.2f}; {windows} window(s) in a row."
    else:
        value, reason, message = (
            "False",
            NO_DRIFT,
            f"The last window ({status.get('windowSize', 0)} rows) did not drift.",
        )
        if status.get("driftedFeatures") and status.get("verdict"):
            # Drifted features next to no drift: the monitor's verdict names the rule that kept it quiet.
            message = f"{message[:-1]}: {status['verdict']}"
    return Conditions(status.get("conditions", []), generation=generation, now=now).mark(
        DRIFT_DETECTED, value, reason, message
    )


def events(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Event]:
    """The operator's Events when a DriftMonitor's status moves from `previous` to `status`.

    The monitor pod announces drift itself (DriftDetected, DriftResolved); these are the retraining's.
    """
    posted = applied_events(previous, status)
    created = status.get("lastRetrainJob")
    if created and created != previous.get("lastRetrainJob"):
        if status.get("lastRetrainRule") == "degradation":
            windows = status.get("consecutiveDegradedWindows") or 0
            why = f"the estimated accuracy stayed degraded for {windows} windows"
        else:
            why = f"drift persisted for {status.get('consecutiveDriftedWindows') or 0} windows"
        posted.append(Event("Normal", RETRAIN_TRIGGERED, f"Created TrainingJob {created}: {why}."))
    retraining_now = find_condition(status.get("conditions") or (), RETRAINING) or {}
    retraining_before = find_condition(previous.get("conditions") or (), RETRAINING) or {}
    refused = retraining_now.get("reason") in _REFUSED
    if refused and (retraining_now.get("reason"), retraining_now.get("message")) != (
        retraining_before.get("reason"),
        retraining_before.get("message"),
    ):
        posted.append(Event("Warning", retraining_now["reason"], retraining_now.get("message", "")))
    return posted
