"""Checks every spec with the API models and records the verdict in status and Events.

Every kind's reconcile runs `accept` as its first step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import kopf
from pydantic import BaseModel

from scaleml_operator.api.conditions import INVALID_SPEC, SPEC_ACCEPTED
from scaleml_operator.api.kinds import Kind
from scaleml_operator.api.validation import InvalidSpecError, parse_spec
from scaleml_operator.kube.apply import FIELD_MANAGER
from scaleml_operator.status.acceptance import accepted, event_message, rejected

# Changes the operator makes itself do not count as reactions to wait for.
OWN_MANAGERS: Final = frozenset({FIELD_MANAGER, "kopf"})


def accept(kind: Kind, body: kopf.Body, status: kopf.Status, patch: kopf.Patch) -> BaseModel | None:
    """The typed spec, with the Accepted condition patched; None (and a Warning Event) if invalid."""
    generation = body.get("metadata", {}).get("generation")
    now = datetime.now(UTC)
    try:
        spec = parse_spec(kind, body.get("spec") or {})
    except InvalidSpecError as error:
        patch.status.update(rejected(status, generation=generation, problem=str(error), now=now))
        kopf.warn(body, reason=INVALID_SPEC, message=event_message(str(error)))
        return None
    phase = "Pending" if "phase" in kind.status.model_fields else None
    patch.status.update(accepted(status, generation=generation, initial_phase=phase, now=now))
    kopf.info(body, reason=SPEC_ACCEPTED, message=f"{kind.kind} spec accepted (generation {generation}).")
    return spec
