"""Checks every spec with the API models and records the verdict in status and Events.

Every kind's reconcile runs `accept` as its first step. The verdict is written with the rest of
the status against the freshest object: kopf's own status patch has no precondition and could
undo what an event handler (or a pod) wrote meanwhile.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final

import kopf

from scaleml_operator.api.conditions import INVALID_SPEC, SPEC_ACCEPTED
from scaleml_operator.api.kinds import Kind
from scaleml_operator.api.validation import InvalidSpecError, parse_spec
from scaleml_operator.handlers.status import write_status
from scaleml_operator.kube.apply import FIELD_MANAGER
from scaleml_operator.status.acceptance import Verdict, accepted, event_message, rejected

# Changes the operator makes itself do not count as reactions to wait for.
OWN_MANAGERS: Final = frozenset({FIELD_MANAGER, "kopf"})


def accept(kind: Kind, body: kopf.Body, status: kopf.Status) -> Verdict:
    """Parses the spec and posts the Event that says how it went; the status is the caller's to write."""
    generation = body.get("metadata", {}).get("generation")
    now = datetime.now(UTC)
    try:
        spec = parse_spec(kind, body.get("spec") or {})
    except InvalidSpecError as error:
        kopf.warn(body, reason=INVALID_SPEC, message=event_message(str(error)))
        return Verdict(None, rejected(status, generation=generation, problem=str(error), now=now))
    phase = "Pending" if "phase" in kind.status.model_fields else None
    kopf.info(body, reason=SPEC_ACCEPTED, message=f"{kind.kind} spec accepted (generation {generation}).")
    return Verdict(spec, accepted(status, generation=generation, initial_phase=phase, now=now))


async def record_rejection(kind: Kind, meta: kopf.Meta, verdict: Verdict) -> None:
    """Writes an invalid spec's verdict alone: nothing is applied until the spec is corrected."""
    await asyncio.to_thread(
        write_status, kind, meta["name"], meta["namespace"], lambda fresh: verdict.over(fresh.get("status") or {})
    )
