"""A DriftMonitor's Ready condition: its monitor runs, and every child took the spec as written."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scaleml_api.conditions import READY
from scaleml_api.v1alpha1.driftmonitor import CHILD_NOT_APPLIED, MONITOR_RUNNING
from scaleml_operator.status.driftmonitor import observed

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
RUNNING: dict[str, Any] = {"metadata": {"name": "churn-monitor"}, "status": {"availableReplicas": 1}}
REFUSED = "Service churn-monitor-metrics: exceeded quota: services, requested: services=1, used: services=5"


def _ready(status: dict[str, Any], deployment: dict[str, Any] | None) -> dict[str, Any]:
    patch = observed(status, deployment=deployment, waiting=None, reference_version=3, generation=2, now=NOW)
    (ready,) = [condition for condition in patch["conditions"] if condition["type"] == READY]
    return ready  # type: ignore[no-any-return]


def _applied(value: str, message: str = "") -> dict[str, Any]:
    condition = {"type": "SpecApplied", "status": value, "reason": "Applied" if value == "True" else "ChildDenied"}
    return {"conditions": [{**condition, "message": message}]}


def test_a_running_monitor_whose_children_all_applied_is_ready() -> None:
    ready = _ready(_applied("True"), RUNNING)
    assert (ready["status"], ready["reason"]) == ("True", MONITOR_RUNNING)


def test_a_running_monitor_with_a_refused_child_is_not_ready_and_says_which() -> None:
    ready = _ready(_applied("False", REFUSED), RUNNING)
    assert (ready["status"], ready["reason"]) == ("False", CHILD_NOT_APPLIED)
    assert ready["message"] == f"The monitor is running, and a child is not as the spec asks: {REFUSED}"


def test_a_refused_deployment_is_not_reported_as_being_created() -> None:
    refused = "Deployment churn-monitor: admission webhook denied the request"
    ready = _ready(_applied("False", refused), None)
    assert (ready["status"], ready["reason"]) == ("False", CHILD_NOT_APPLIED)
    assert ready["message"] == f"The monitor is not running, and a child is not as the spec asks: {refused}"
