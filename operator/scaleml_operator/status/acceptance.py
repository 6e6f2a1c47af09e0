"""The verdict on a spec, the status it gives, whether the children took the spec, and the Events of both (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic

from scaleml_api.conditions import (
    ACCEPTED,
    APPLIED,
    CHILD_DENIED,
    CHILD_REJECTED,
    IMMUTABLE_WHILE_RUNNING,
    INVALID_SPEC,
    INVALID_SPEC_EVENT,
    READY,
    RESOURCE_EXISTS,
    RESOURCE_EXISTS_EVENT,
    SPEC_ACCEPTED,
    SPEC_ACCEPTED_EVENT,
    SPEC_APPLIED,
    SPEC_NOT_APPLIED,
)
from scaleml_api.kind import Kind, SpecT
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_operator.status.conditions import Conditions, Event, find_condition

# Event messages are kept short: the API server truncates larger ones and they flood `kubectl describe`.
MAX_EVENT_MESSAGE_BYTES = 1024


@dataclass(frozen=True)
class Verdict(Generic[SpecT]):
    """The typed spec (None when invalid) and the status fields that say whether it was accepted."""

    spec: SpecT | None
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


def judge(kind: Kind[SpecT, Any], parent: Mapping[str, Any], now: datetime) -> Verdict[SpecT]:
    """The verdict on an object's spec, as the API returned the object."""
    generation = parent["metadata"].get("generation")
    status = parent.get("status") or {}
    try:
        spec = parse_spec(kind, parent.get("spec") or {})
    except InvalidSpecError as error:
        return Verdict(None, rejected(status, generation=generation, problem=str(error), now=now))
    phase = "Pending" if "phase" in kind.status.model_fields else None
    return Verdict(spec, accepted(status, generation=generation, initial_phase=phase, now=now))


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


def applied(
    status: Mapping[str, Any],
    *,
    foreign: list[str],
    rejected: list[str],
    denied: bool,
    kept_back: str,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions with SpecApplied set: did the children take the spec as written?

    `denied`: one of the `rejected` was denied by the cluster's admission and may go through as it is;
    its reason then says so, for the periodic resync to try again (`child_denied`).
    """
    if foreign:
        value, reason = False, RESOURCE_EXISTS
        message = (
            f"{', '.join(foreign)} exists and this object does not control it: it is left untouched, and "
            "the children that depend on it wait until it is renamed or removed."
        )
        if rejected:
            message += f" Also refused: {' '.join(rejected)}"
    elif rejected:
        value, reason, message = False, CHILD_DENIED if denied else CHILD_REJECTED, " ".join(rejected)
    elif kept_back:
        value, reason, message = False, IMMUTABLE_WHILE_RUNNING, kept_back
    else:
        value, reason, message = True, APPLIED, ""
    return Conditions(status.get("conditions", []), generation=generation, now=now).mark(
        SPEC_APPLIED, value, reason, message
    )


def not_applied(status: Mapping[str, Any]) -> str | None:
    """What SpecApplied says when a child is not as the spec asks (refused, or its name taken); None when all are."""
    applied_condition = find_condition(status.get("conditions") or (), SPEC_APPLIED) or {}
    return applied_condition.get("message", "") if applied_condition.get("status") == "False" else None


def child_denied(status: Mapping[str, Any]) -> bool:
    """Whether the status says a child was denied for now (ChildDenied), to be tried again as it is."""
    applied_condition = find_condition(status.get("conditions") or (), SPEC_APPLIED) or {}
    return applied_condition.get("status") == "False" and applied_condition.get("reason") == CHILD_DENIED


def _changed(previous: Mapping[str, Any], status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    """The condition `type_` of `status` when its status, message or generation moved since `previous`."""
    now = find_condition(status.get("conditions") or (), type_)
    before = find_condition(previous.get("conditions") or (), type_) or {}
    keys = ("status", "message", "observedGeneration")
    if now is None or all(now.get(key) == before.get(key) for key in keys):
        return None
    return now


def acceptance_events(kind: str, previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Event]:
    """The Event of a new verdict on the spec, if the status move from `previous` to `status` holds one.

    A spec valid from its first generation posts none: its Accepted condition says so, and an Event
    for every object created would be a write per object that tells its owner nothing new (as with
    Kubernetes' own kinds, the Events say what happened to it next). A changed spec found valid, and
    a spec that turns valid again, post one; every invalid spec posts its Warning.
    """
    verdict = _changed(previous, status, ACCEPTED)
    if verdict is None:
        return []
    if verdict["status"] == "True":
        if find_condition(previous.get("conditions") or (), ACCEPTED) is None:
            return []
        generation = verdict.get("observedGeneration")
        return [Event("Normal", SPEC_ACCEPTED_EVENT, f"{kind} spec accepted (generation {generation}).")]
    return [Event("Warning", INVALID_SPEC_EVENT, verdict.get("message", ""))]


def applied_events(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Event]:
    """A Warning when the children newly refuse or keep back part of the spec."""
    taken = _changed(previous, status, SPEC_APPLIED)
    if taken is None or taken["status"] != "False":
        return []
    reason = RESOURCE_EXISTS_EVENT if taken.get("reason") == RESOURCE_EXISTS else SPEC_NOT_APPLIED
    return [Event("Warning", reason, taken.get("message", ""))]


def event_message(text: str) -> str:
    """`text` cut to fit an Event, on a character boundary."""
    encoded = text.encode()
    if len(encoded) <= MAX_EVENT_MESSAGE_BYTES:
        return text
    return encoded[: MAX_EVENT_MESSAGE_BYTES - 3].decode(errors="ignore") + "..."
