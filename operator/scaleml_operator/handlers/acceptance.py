"""Checks every spec with the API models and records the verdict in status and Events.

The full reconcile of each kind builds on this; a spec the models reject never reaches it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from scaleml_operator.api.conditions import INVALID_SPEC, SPEC_ACCEPTED
from scaleml_operator.api.kinds import KINDS, MODEL_DEPLOYMENT, TRAINING_JOB, Kind
from scaleml_operator.api.validation import InvalidSpecError, parse_spec
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.handlers.settings import FIELD_MANAGER
from scaleml_operator.status.acceptance import accepted, event_message, rejected

_INITIAL_PHASE = {TRAINING_JOB.kind: "Pending", MODEL_DEPLOYMENT.kind: "Pending"}
# Changes the operator makes itself do not count as reactions to wait for.
_OWN_MANAGERS = frozenset({FIELD_MANAGER, "kopf"})


def _register(kind: Kind) -> None:
    @kopf.on.resume(*kind.group_version, id="accept")
    @kopf.on.create(*kind.group_version, id="accept")
    @kopf.on.update(*kind.group_version, id="accept", field="spec")
    @instrumented(kind.kind, _OWN_MANAGERS)
    async def accept(body: kopf.Body, meta: kopf.Meta, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
        generation = meta.get("generation")
        now = datetime.now(UTC)
        try:
            parse_spec(kind, body.get("spec") or {})
        except InvalidSpecError as error:
            patch.status.update(rejected(status, generation=generation, problem=str(error), now=now))
            kopf.warn(body, reason=INVALID_SPEC, message=event_message(str(error)))
            return
        patch.status.update(
            accepted(status, generation=generation, initial_phase=_INITIAL_PHASE.get(kind.kind), now=now)
        )
        kopf.info(body, reason=SPEC_ACCEPTED, message=f"{kind.kind} spec accepted (generation {generation}).")


for _kind in KINDS:
    _register(_kind)
