"""Pure condition bookkeeping, the way Kubernetes' meta.SetStatusCondition does it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scaleml_operator.api.conditions import ConditionStatus

ConditionDict = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about an object."""

    type: str
    reason: str
    message: str


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server stores metav1.Time."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Iterable[Mapping[str, Any]],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[ConditionDict]:
    """The conditions with `type` set; lastTransitionTime moves only when the status flips."""
    result: list[ConditionDict] = []
    replaced = False
    for existing in conditions:
        if existing.get("type") != type:
            result.append(dict(existing))
            continue
        replaced = True
        flipped = existing.get("status") != status
        result.append(
            _condition(
                type,
                status,
                reason,
                message,
                generation,
                timestamp(now) if flipped else existing.get("lastTransitionTime", timestamp(now)),
            )
        )
    if not replaced:
        result.append(_condition(type, status, reason, message, generation, timestamp(now)))
    return result


def find_condition(conditions: Iterable[Mapping[str, Any]], type: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type), None)


def _condition(
    type: str, status: str, reason: str, message: str, generation: int | None, transition: str
) -> ConditionDict:
    condition: ConditionDict = {
        "type": type,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition
