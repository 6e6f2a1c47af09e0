"""The status an object gets once its spec has been checked."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scaleml_operator.api.conditions import ACCEPTED, INVALID_SPEC, READY, SPEC_ACCEPTED
from scaleml_operator.status.conditions import set_condition

# Event messages are kept short: the API server truncates larger ones and they flood `kubectl describe`.
MAX_EVENT_MESSAGE_BYTES = 1024


def accepted(
    status: Mapping[str, Any], *, generation: int | None, initial_phase: str | None, now: datetime
) -> dict[str, Any]:
    """Status fields to patch when the spec is valid."""
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": set_condition(
            status.get("conditions", []),
            type=ACCEPTED,
            status="True",
            reason=SPEC_ACCEPTED,
            message="The spec is valid.",
            generation=generation,
            now=now,
        ),
    }
    if initial_phase and not status.get("phase"):
        patch["phase"] = initial_phase
    return patch


def rejected(status: Mapping[str, Any], *, generation: int | None, problem: str, now: datetime) -> dict[str, Any]:
    """Status fields to patch when the spec passed the schema but not deeper validation.

    Nothing is retried: the object waits, with the reason in plain sight, for a corrected spec.
    """
    conditions = set_condition(
        status.get("conditions", []),
        type=ACCEPTED,
        status="False",
        reason=INVALID_SPEC,
        message=problem,
        generation=generation,
        now=now,
    )
    conditions = set_condition(
        conditions,
        type=READY,
        status="False",
        reason=INVALID_SPEC,
        message="The spec is invalid; see the Accepted condition.",
        generation=generation,
        now=now,
    )
    return {"observedGeneration": generation, "conditions": conditions}


def event_message(text: str) -> str:
    """`text` cut to fit an Event, on a character boundary."""
    encoded = text.encode()
    if len(encoded) <= MAX_EVENT_MESSAGE_BYTES:
        return text
    return encoded[: MAX_EVENT_MESSAGE_BYTES - 3].decode(errors="ignore") + "..."
