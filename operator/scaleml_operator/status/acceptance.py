"""The status an object gets once its spec has been checked."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from scaleml_operator.api.conditions import ACCEPTED, INVALID_SPEC, READY, SPEC_ACCEPTED
from scaleml_operator.status.conditions import Conditions

# Event messages are kept short: the API server truncates larger ones and they flood `kubectl describe`.
MAX_EVENT_MESSAGE_BYTES = 1024


@dataclass(frozen=True)
class Verdict:
    """The typed spec (None when invalid) and the status fields that say whether it was accepted."""

    spec: BaseModel | None
    fields: dict[str, Any]

    def over(self, fresh: Mapping[str, Any]) -> dict[str, Any]:
        """The freshest status with this verdict laid over it.

        The verdict decides Accepted, and for an invalid spec Ready too; a valid one takes back the
        Ready that an invalid spec set (the kind's own status sets it again, if it has one). Other
        conditions, and a phase that someone already set, stay as they are.
        """
        current = {**fresh, **{key: value for key, value in self.fields.items() if key != "conditions"}}
        if "phase" in self.fields and fresh.get("phase"):
            current["phase"] = fresh["phase"]
        decided = {ACCEPTED} if self.spec is not None else {ACCEPTED, READY}
        current["conditions"] = [
            *(c for c in fresh.get("conditions", []) if c["type"] not in decided and not self._withdrawn(c)),
            *(c for c in self.fields.get("conditions", []) if c["type"] in decided),
        ]
        return current

    def _withdrawn(self, condition: Mapping[str, Any]) -> bool:
        return self.spec is not None and condition["type"] == READY and condition.get("reason") == INVALID_SPEC


def accepted(
    status: Mapping[str, Any], *, generation: int | None, initial_phase: str | None, now: datetime
) -> dict[str, Any]:
    """Status fields to patch when the spec is valid."""
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": Conditions(status.get("conditions", []), generation=generation, now=now).mark(
            ACCEPTED, True, SPEC_ACCEPTED, "The spec is valid."
        ),
    }
    if initial_phase and not status.get("phase"):
        patch["phase"] = initial_phase
    return patch


def rejected(status: Mapping[str, Any], *, generation: int | None, problem: str, now: datetime) -> dict[str, Any]:
    """Status fields to patch when the spec passed the schema but not deeper validation.

    Nothing is retried: the object waits, with the reason in plain sight, for a corrected spec.
    """
    conditions = Conditions(status.get("conditions", []), generation=generation, now=now)
    conditions.mark(ACCEPTED, False, INVALID_SPEC, problem)
    conditions.mark(READY, False, INVALID_SPEC, "The spec is invalid; see the Accepted condition.")
    return {"observedGeneration": generation, "conditions": conditions.items}


def event_message(text: str) -> str:
    """`text` cut to fit an Event, on a character boundary."""
    encoded = text.encode()
    if len(encoded) <= MAX_EVENT_MESSAGE_BYTES:
        return text
    return encoded[: MAX_EVENT_MESSAGE_BYTES - 3].decode(errors="ignore") + "..."
