"""A ModelDeployment's status from its Deployment and pods: rollouts, readiness, and why a model did not load."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scaleml_api.conditions import Waiting
from scaleml_operator.status.modeldeployment import events, observed, server_failure

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ENDPOINTS = {"http": "http://churn.ml.svc:8000", "grpc": "churn.ml.svc:8001"}


def _deployment(
    version: int, *, replicas: int = 2, updated: int = 2, ready: int = 2, total: int | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 4, "annotations": {"scaleml.dev/model-version": str(version)}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 4,
            "replicas": updated if total is None else total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            **status,
        },
    }


def _observe(
    deployment: dict[str, Any] | None,
    version: int | None = 2,
    pods: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    waiting: Waiting | None = None,
) -> dict[str, Any]:
    return observed(
        status or {},
        deployment=deployment,
        pods=pods or [],
        waiting=waiting,
        version=version,
        endpoints=ENDPOINTS,
        selector="app=churn",
        generation=7,
        now=NOW,
    )


def _conditions(patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in patch["conditions"]}


def _crashing_pod(message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn-triton-7d9f-x2"},
        "status": {
            "containerStatuses": [
                {
                    "name": "triton",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": message}},
                }
            ]
        },
    }


def test_a_complete_rollout_is_ready_and_reports_the_served_version() -> None:
    patch = _observe(_deployment(2))
    assert patch["phase"] == "Ready"
    assert patch["servedVersion"] == 2
    assert (patch["replicas"], patch["readyReplicas"]) == (2, 2)
    assert patch["endpoints"] == ENDPOINTS
    conditions = _conditions(patch)
    assert conditions["Ready"]["status"] == "True"
    assert "serving model version 2" in conditions["Ready"]["message"]
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    assert all(c["observedGeneration"] == 7 for c in conditions.values())


def test_during_a_rollout_the_old_version_stays_the_served_one() -> None:
    # Two pods of the old template still serve while one new pod starts.
    patch = _observe(_deployment(3, updated=1, ready=2, total=3), version=3, status={"servedVersion": 2})
    assert patch["phase"] == "Progressing"
    assert "servedVersion" not in patch
    assert _conditions(patch)["Progressing"]["status"] == "True"
    assert _conditions(patch)["Ready"]["status"] == "True"

    # The operator applied version 4 but the Deployment does not show it yet.
    stale = _observe(_deployment(3), version=4)
    assert stale["phase"] == "Progressing"
    assert _conditions(stale)["Progressing"]["message"] == "Rolling out model version 4."


def test_a_model_that_does_not_load_fails_the_deployment_with_tritons_reason() -> None:
    message = "E model_lifecycle.cc:642] failed to load 'churn' version 1: Invalid argument: unexpected shape"
    patch = _observe(_deployment(1, updated=1, ready=0, replicas=1), version=1, pods=[_crashing_pod(message)])

    assert patch["phase"] == "Failed"
    degraded = _conditions(patch)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelLoadFailed")
    assert "unexpected shape" in degraded["message"]
    assert _conditions(patch)["Ready"]["reason"] == "ModelLoadFailed"


def test_a_crash_with_replicas_still_ready_is_degraded() -> None:
    pods = [_crashing_pod("Segmentation fault")]
    patch = _observe(_deployment(1, replicas=2, updated=2, ready=1), version=1, pods=pods)
    assert patch["phase"] == "Degraded"
    assert _conditions(patch)["Degraded"]["reason"] == "ServerCrashing"


def test_a_healthy_or_first_start_pod_is_no_failure() -> None:
    starting = {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "triton", "restartCount": 0, "state": {"running": {}}}]},
    }
    assert server_failure([starting]) is None


def test_a_stalled_rollout_is_degraded() -> None:
    stalled = _deployment(
        2,
        updated=1,
        ready=1,
        total=2,
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "x"}],
    )
    patch = _observe(stalled)
    assert patch["phase"] == "Degraded"
    assert _conditions(patch)["Degraded"]["reason"] == "ProgressDeadlineExceeded"


def test_waiting_and_scaled_to_zero_are_not_ready() -> None:
    waiting = _observe(
        None, waiting=Waiting("WaitingForModel", "TrainingJob churn has not exported a model version yet.")
    )
    assert waiting["phase"] == "Pending"
    assert _conditions(waiting)["Ready"]["reason"] == "WaitingForModel"
    assert waiting["replicas"] == 0

    zero = _observe(_deployment(2, replicas=0, updated=0, ready=0))
    assert zero["phase"] == "Pending"
    assert _conditions(zero)["Ready"]["reason"] == "ScaledToZero"


def test_events_announce_a_new_served_version_once_and_failures_as_warnings() -> None:
    ready = _observe(_deployment(2))
    posted = events({"phase": "Progressing", "servedVersion": 1}, ready)
    assert [(e.type, e.reason) for e in posted] == [
        ("Normal", "ModelVersionServed"),
        ("Normal", "ModelDeploymentReady"),
    ]
    assert events(ready, ready) == []

    failed = _observe(_deployment(1, updated=1, ready=0, replicas=1), version=1, pods=[_crashing_pod("failed to load")])
    assert [(e.type, e.reason) for e in events(ready, failed)] == [("Warning", "ModelLoadFailed")]


def test_a_refused_child_is_announced_once_per_reason() -> None:
    ready = _observe(_deployment(2))
    refused = {
        **ready,
        "conditions": [
            *ready["conditions"],
            {"type": "SpecApplied", "status": "False", "reason": "ChildRejected", "message": "HPA churn: invalid"},
        ],
    }
    assert [(e.type, e.reason, e.message) for e in events(ready, refused)] == [
        ("Warning", "SpecNotApplied", "HPA churn: invalid")
    ]
    assert events(refused, refused) == []
