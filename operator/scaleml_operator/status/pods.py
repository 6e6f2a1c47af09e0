"""What the pods of a Job or a Deployment say about themselves: running, or why they cannot start (pure).

The scheduler and the kubelet write why a pod waits where only `kubectl describe pod` shows it: the
pod's PodScheduled condition (Unschedulable: no node fits its selector, its GPUs, its tolerations)
and its containers' waiting state (ImagePullBackOff, CreateContainerConfigError, an init container
crash-looping). The kinds' status functions read it here, so that their conditions carry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, NamedTuple

# Enough of a message to say why, short enough for a condition and an Event (which stays under 1 KiB).
MAX_MESSAGE_CHARS: Final = 512
# What a container waits for while it starts as it should.
_STARTING: Final = frozenset({"ContainerCreating", "PodInitializing"})
# The label the Deployment controller puts on the pods of each of its ReplicaSets: their template's hash.
TEMPLATE_HASH_LABEL: Final = "pod-template-hash"


class Problem(NamedTuple):
    """Why a pod cannot run: the scheduler's or the kubelet's reason, and a message naming the pod."""

    reason: str
    message: str


def name(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name", "?"))


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, cut to `limit` characters (its head: where the scheduler and kubelet say why)."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def about(pod: Mapping[str, Any], text: str) -> str:
    """A message about one pod, naming it."""
    return f"Pod {name(pod)}: {text}"


def running(pod: Mapping[str, Any]) -> bool:
    """Whether the pod runs: scheduled, its init containers done, its containers started (phase Running).

    A pod being deleted does not count: it is on its way out.
    """
    return pod.get("status", {}).get("phase") == "Running" and not pod.get("metadata", {}).get("deletionTimestamp")


def start_problem(pod: Mapping[str, Any]) -> Problem | None:
    """Why a pod that has not started cannot start, or None (it is starting as it should, or it runs or ended)."""
    status = pod.get("status", {})
    if status.get("phase") not in (None, "Pending"):
        return None
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return Problem(reason, about(pod, one_line(f"{reason}: {condition.get('message') or 'not scheduled'}")))
    for kind, key in (("init container", "initContainerStatuses"), ("container", "containerStatuses")):
        for container in status.get(key) or ():
            waiting = container.get("state", {}).get("waiting") or {}
            reason = waiting.get("reason")
            if not reason or reason in _STARTING:
                continue
            said = waiting.get("message") or _last_exit(container) or reason
            text = one_line(f"{kind} {container.get('name', '?')}: {reason}: {said}")
            return Problem(reason, about(pod, text))
    return None


def _last_exit(container: Mapping[str, Any]) -> str:
    """How a restarting container's previous run ended (an init container crash-looping)."""
    terminated = container.get("lastState", {}).get("terminated") or {}
    if not terminated:
        return ""
    said = (terminated.get("message") or "").strip() or terminated.get("reason") or "Error"
    return f"exit code {terminated.get('exitCode')}: {said}"


def first_problem(pods: Iterable[Mapping[str, Any]]) -> Problem | None:
    """The start problem of the first pod (by name) that has one."""
    for pod in sorted(pods, key=name):
        if (problem := start_problem(pod)) is not None:
            return problem
    return None


def newest_template(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Of a Deployment's `pods`, those of its newest template (ReplicaSet), but for pods being deleted.

    A pod names its template by hash only, not by revision, and the watches hold no ReplicaSets: the
    newest template is the one whose oldest pod is the youngest. A ReplicaSet creates its pods once
    it exists, after the older templates' first pods (a rollback's template scales up from none, so
    its pods are young too). Only an older template all of whose pods were replaced after the newest
    one's first pod was created looks newer (one replica, evicted during a rollout): its pods are read
    then, and why the rollout waits is left to the Deployment's progress deadline.
    """
    templates: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        if not meta.get("deletionTimestamp"):
            templates.setdefault((meta.get("labels") or {}).get(TEMPLATE_HASH_LABEL, ""), []).append(pod)

    def first_created(template: str) -> tuple[str, str]:
        # RFC 3339 times of one format compare as strings; the hash breaks a tie of the same second.
        return min(str(pod.get("metadata", {}).get("creationTimestamp", "")) for pod in templates[template]), template

    return templates[max(templates, key=first_created)] if templates else []
