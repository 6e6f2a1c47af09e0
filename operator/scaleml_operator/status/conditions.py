"""Pure condition bookkeeping, the way Kubernetes' meta.SetStatusCondition does it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scaleml_api.conditions import ConditionStatus

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


class Conditions:
    """A status's conditions as one reconcile sets them: one observed generation, one moment."""

    def __init__(self, conditions: Iterable[Mapping[str, Any]], *, generation: int | None, now: datetime) -> None:
        self.items: list[ConditionDict] = [dict(condition) for condition in conditions]
        self._generation = generation
        self._now = now

    def mark(self, type: str, value: bool | ConditionStatus, reason: str, message: str = "") -> list[ConditionDict]:
        """Sets `type` (a bool is True or False; "Unknown" passes as is); returns the conditions so far."""
        status: ConditionStatus = value if isinstance(value, str) else ("True" if value else "False")
        self.items = set_condition(
            self.items,
            type=type,
            status=status,
            reason=reason,
            message=message,
            generation=self._generation,
            now=self._now,
        )
        return self.items


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
