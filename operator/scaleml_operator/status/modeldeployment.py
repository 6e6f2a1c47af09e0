"""A ModelDeployment's status, derived from its Triton Deployment and that Deployment's pods (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from scaleml_api.conditions import CREATING, READY, Waiting
from scaleml_api.v1alpha1.modeldeployment import (
    CHILD_NOT_APPLIED,
    DEGRADED,
    GATE_FAILED,
    MODEL_DEPLOYMENT_READY,
    MODEL_LOAD_FAILED,
    MODEL_VERSION_ANNOTATION,
    MODEL_VERSION_SERVED,
    NO_FAILURE,
    NO_READY_REPLICA,
    NOT_GATED,
    POD_START_PROBLEMS,
    PROGRESS_DEADLINE_EXCEEDED,
    PROGRESSING,
    PROMOTED,
    REPLICAS_READY,
    ROLLOUT_COMPLETE,
    ROLLOUT_IN_PROGRESS,
    SCALED_TO_ZERO,
    SERVER_CRASHING,
    TRITON_CONTAINER,
    VERSION_HELD_BACK,
    VERSION_PROMOTED_BY_HAND,
)
from scaleml_operator.status import pods as pods_status
from scaleml_operator.status.acceptance import applied_events, not_applied
from scaleml_operator.status.conditions import Conditions, Event, find_condition
from scaleml_operator.status.promotion import Promotion

# Enough of Triton's log to say why a model did not load, short enough for a condition.
MAX_REASON_CHARS: Final = 2000


def events(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Event]:
    """The Events to post when a ModelDeployment's status moves from `previous` to `status`."""
    phase = status.get("phase")
    posted = applied_events(previous, status)
    held = status.get("candidateVersion")
    if held and held != previous.get("candidateVersion"):
        posted.append(Event("Warning", VERSION_HELD_BACK, _condition(status, PROMOTED).get("message", "")))
    override = status.get("override") or {}
    if override.get("version") and override.get("version") != (previous.get("override") or {}).get("version"):
        posted.append(Event("Warning", VERSION_PROMOTED_BY_HAND, _condition(status, PROMOTED).get("message", "")))
    progressing, before = _condition(status, PROGRESSING), _condition(previous, PROGRESSING)
    if progressing.get("reason") in POD_START_PROBLEMS and before.get("reason") not in POD_START_PROBLEMS:
        # When the pods stop starting as they should; not again as the kubelet's reasons alternate
        # (ErrImagePull and ImagePullBackOff at each attempt to pull).
        posted.append(Event("Warning", progressing["reason"], progressing.get("message", "")))
    version = status.get("servedVersion")
    if version and version != previous.get("servedVersion"):
        posted.append(Event("Normal", MODEL_VERSION_SERVED, f"Every ready replica serves model version {version}."))
    if phase != previous.get("phase"):
        degraded = _condition(status, DEGRADED)
        if phase == "Ready":
            posted.append(Event("Normal", MODEL_DEPLOYMENT_READY, _condition(status, READY).get("message", "")))
        # A child not applied was told when SpecApplied turned False (applied_events).
        elif phase in ("Degraded", "Failed") and degraded.get("reason") != CHILD_NOT_APPLIED:
            posted.append(Event("Warning", degraded.get("reason", phase), degraded.get("message", "")))
    return posted


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    """The condition of `type_` in an object's status (ours or a Deployment's); empty when there is none."""
    return find_condition(status.get("conditions") or (), type_) or {}


def server_failure(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) when a Triton container keeps failing: the model did not load, or the server crashed."""
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses") or ():
            if container.get("name") != TRITON_CONTAINER:
                continue
            waiting = container.get("state", {}).get("waiting", {})
            terminated = container.get("lastState", {}).get("terminated") or container.get("state", {}).get(
                "terminated"
            )
            if not terminated or terminated.get("exitCode", 0) == 0:
                continue
            if waiting.get("reason") != "CrashLoopBackOff" and not container.get("restartCount"):
                continue
            message = (terminated.get("message") or "").strip()
            reason = MODEL_LOAD_FAILED if "failed to load" in message else SERVER_CRASHING
            detail = message[-MAX_REASON_CHARS:] or f"exit code {terminated.get('exitCode')}"
            return reason, pods_status.about(pod, f"Triton exited ({detail})")
    return None


def _rollout(deployment: Mapping[str, Any], version: int | None) -> tuple[bool, str]:
    """Whether the rollout of the current template is complete, and if not, what it waits for."""
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    desired = spec.get("replicas", 1)
    updated, total = status.get("updatedReplicas") or 0, status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    annotated = deployment.get("metadata", {}).get("annotations", {}).get(MODEL_VERSION_ANNOTATION)
    if version is not None and annotated != str(version):
        return False, f"Rolling out model version {version}."
    if (status.get("observedGeneration") or 0) < (deployment.get("metadata", {}).get("generation") or 0):
        return False, "The Deployment controller has not seen the newest template yet."
    if updated < desired:
        return False, f"{updated} of {desired} replicas run the newest template."
    if total > updated:
        return False, f"{total - updated} replica(s) of the previous template remain."
    if available < updated:
        return False, f"{available} of {updated} updated replicas are available."
    return True, f"{available} replica(s) up to date and available."


def _cannot_start(
    problem: pods_status.Problem, ready: int, deployment_status: Mapping[str, Any], served: int | None
) -> str:
    """What a pod of the newest template that cannot start says, and, while replicas of an older template
    still serve, that the service is up on them."""
    older = (deployment_status.get("replicas") or 0) - (deployment_status.get("updatedReplicas") or 0)
    if ready == 0 or older <= 0:
        return problem.message
    version = f" model version {served}" if served else ""
    return f"The previous template's pods still serve{version}; the newest template's cannot start. {problem.message}"


def promotion_status(
    status: Mapping[str, Any], conditions: Conditions, promotion: Promotion | None, now: datetime
) -> dict[str, Any]:
    """The Promoted condition, candidateVersion and override (kept from the first time it served a version)."""
    mark = conditions.mark
    if promotion is None:
        mark(
            PROMOTED,
            True,
            NOT_GATED,
            "Nothing to judge: the version is pinned, the model is a repository, or its TrainingJob is missing.",
        )
        return {"candidateVersion": None}
    mark(PROMOTED, promotion.reason != GATE_FAILED, promotion.reason, promotion.message)
    patch: dict[str, Any] = {"candidateVersion": promotion.candidate}
    recorded = status.get("override") or {}
    if promotion.overruled and recorded.get("version") != promotion.version:
        time = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        patch["override"] = {"version": promotion.version, "time": time, "failed": promotion.overruled}
    return patch


def _mark_degraded(conditions: Conditions, failure: tuple[str, str] | None, missing: str | None) -> None:
    """Degraded: Triton failing comes first (it may stop serving); then a child that is not applied."""
    if failure:
        conditions.mark(DEGRADED, True, *failure)
    elif missing is not None:
        conditions.mark(DEGRADED, True, CHILD_NOT_APPLIED, missing)
    else:
        conditions.mark(DEGRADED, False, NO_FAILURE)


def observed(
    status: Mapping[str, Any],
    *,
    deployment: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    waiting: Waiting | None,
    version: int | None,
    promotion: Promotion | None = None,
    endpoints: Mapping[str, str],
    selector: str,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """Status fields to patch. `version` is the version the Deployment should serve (None: the newest on disk)."""
    conditions = Conditions(status.get("conditions", []), generation=generation, now=now)
    mark = conditions.mark

    patch: dict[str, Any] = {"endpoints": dict(endpoints), "selector": selector}
    patch.update(promotion_status(status, conditions, promotion, now))
    # A refused child (an HPA the API server would not take, say) leaves the replicas serving without
    # it: not what the spec asks, so never Ready, and Degraded while they serve.
    missing = not_applied(status)
    if waiting is not None or deployment is None:
        reason, message = (waiting.reason, waiting.message) if waiting else (CREATING, "Creating the Deployment.")
        mark(READY, False, reason, message)
        mark(PROGRESSING, True, reason, message)
        _mark_degraded(conditions, None, missing)
        patch.update(phase="Pending", conditions=conditions.items, replicas=0, readyReplicas=0)
        return patch

    deployment_status = deployment.get("status", {})
    ready = deployment_status.get("readyReplicas") or 0
    desired = deployment.get("spec", {}).get("replicas", 1)
    complete, progress = _rollout(deployment, version)
    # What the rollout waits for, in the words of a pod of the newest template that cannot start
    # (the older templates' pods are on their way out).
    problem = None if complete else pods_status.first_problem(pods_status.newest_template(pods))
    failure = server_failure(pods)
    stalled = _condition(deployment_status, "Progressing")
    replica_failure = _condition(deployment_status, "ReplicaFailure")
    if failure is None and stalled.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        # The deadline says that the rollout stalled; the pod that cannot start, why.
        said = stalled.get("message", "")
        failure = (PROGRESS_DEADLINE_EXCEEDED, f"{said} {problem.message}" if problem else said)
    if failure is None and replica_failure.get("status") == "True":
        failure = (replica_failure.get("reason") or "ReplicaFailure", replica_failure.get("message", ""))
    cannot_start = _cannot_start(problem, ready, deployment_status, status.get("servedVersion")) if problem else ""
    waits_on = problem.reason if problem and problem.reason in POD_START_PROBLEMS else None
    if cannot_start:
        progress = f"{progress} {cannot_start}"

    mark(PROGRESSING, not complete, ROLLOUT_COMPLETE if complete else waits_on or ROLLOUT_IN_PROGRESS, progress)
    _mark_degraded(conditions, failure, missing)
    if desired == 0:
        phase = "Pending"
        mark(READY, False, SCALED_TO_ZERO, "The Deployment is scaled to zero replicas.")
    elif ready == 0:
        phase = "Failed" if failure else "Progressing"
        reason, message = failure or (waits_on or NO_READY_REPLICA, progress)
        mark(READY, False, reason, message)
    else:
        phase = "Degraded" if failure or missing is not None else ("Ready" if complete else "Progressing")
        serving = f" serving model version {version}" if version and complete else ""
        if missing is not None:
            message = f"{ready}/{desired} replicas ready{serving}, but a child is not as the spec asks: {missing}"
            mark(READY, False, CHILD_NOT_APPLIED, message)
        else:
            also = f" {cannot_start}" if cannot_start else ""
            mark(READY, True, REPLICAS_READY, f"{ready}/{desired} replicas ready{serving}.{also}")
    patch.update(phase=phase, conditions=conditions.items, replicas=deployment_status.get("replicas") or 0)
    patch["readyReplicas"] = ready
    if complete and version is not None:
        patch["servedVersion"] = version
    return patch
