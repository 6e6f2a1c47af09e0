"""Status conditions in the shape of the rest of Kubernetes (metav1.Condition), and their vocabulary.

Condition types, their reasons and Event reasons are part of the API: `kubectl wait
--for=condition=Ready`, Argo CD health checks and alerts match on them. Each is declared once, in
a `Vocabulary` next to the kind that uses it (the terms every kind shares are here), as a constant
the code uses and a sentence the docs print (docs/reference/conditions-events.md is generated).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints

from scaleml_api.base import ApiModel, ListType

ConditionStatus = Literal["True", "False", "Unknown"]
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Term:
    """One word of the vocabulary: a condition type, a reason (with the types it explains) or an Event reason."""

    name: str
    meaning: str
    # For a reason: the condition types it is given on. For an Event reason: Normal or Warning.
    conditions: tuple[str, ...] = ()
    event_type: EventType | None = None


class Vocabulary:
    """The condition types, reasons and Event reasons of one kind ("" for those every kind shares).

    Each declaration returns the name, so it is the constant the code uses and the docs' entry at once.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.conditions: list[Term] = []
        self.reasons: list[Term] = []
        self.events: list[Term] = []

    def condition(self, name: str, meaning: str) -> str:
        self.conditions.append(Term(name, meaning))
        return name

    def reason(self, name: str, meaning: str, *, on: tuple[str, ...]) -> str:
        self.reasons.append(Term(name, meaning, conditions=on))
        return name

    def event(self, name: str, event_type: EventType, meaning: str) -> str:
        self.events.append(Term(name, meaning, event_type=event_type))
        return name


SHARED: Final = Vocabulary("")

READY: Final = SHARED.condition(
    "Ready", "The object does what its spec asks (ModelDeployment: serving; DriftMonitor: monitoring)."
)
ACCEPTED: Final = SHARED.condition("Accepted", "The spec of the observed generation passed validation.")
SPEC_APPLIED: Final = SHARED.condition(
    "SpecApplied", "Every child took the spec as written (False: the message names what was refused or kept back)."
)

SPEC_ACCEPTED: Final = SHARED.reason("SpecAccepted", "The spec is valid.", on=(ACCEPTED,))
INVALID_SPEC: Final = SHARED.reason(
    "InvalidSpec",
    "The spec passed the CRD schema but not the operator's checks; the message names the field. Nothing "
    "is applied until the spec is corrected.",
    on=(ACCEPTED, READY),
)
CREATING: Final = SHARED.reason("Creating", "The child that does the work does not exist yet.", on=(READY,))
APPLIED: Final = SHARED.reason("Applied", "Every child was applied.", on=(SPEC_APPLIED,))
CHILD_REJECTED: Final = SHARED.reason(
    "ChildRejected",
    "The API server refused a child as invalid (a field the child's schema does not declare, or an admission "
    "policy of the cluster refusing it as Invalid); the others still applied. The child is applied again when the "
    "spec changes.",
    on=(SPEC_APPLIED,),
)
CHILD_DENIED: Final = SHARED.reason(
    "ChildDenied",
    "The cluster's admission denied a child for now: a ResourceQuota is used up, or an admission policy or "
    "webhook of the cluster refused it (the message has the API server's words). The others still applied; "
    "the operator tries the child again once per resync period, and the condition clears when it goes through.",
    on=(SPEC_APPLIED,),
)
RESOURCE_EXISTS: Final = SHARED.reason(
    "ResourceExists",
    "An object of a child's name exists and this object does not control it: it is left exactly as it is.",
    on=(SPEC_APPLIED,),
)
IMMUTABLE_WHILE_RUNNING: Final = SHARED.reason(
    "ImmutableWhileRunning",
    "A running Job keeps its pod template and size; the rest of the spec reached it.",
    on=(SPEC_APPLIED,),
)

SPEC_ACCEPTED_EVENT: Final = SHARED.event(
    SPEC_ACCEPTED,
    "Normal",
    "A changed spec (a new generation) is valid, or an invalid one was corrected. Not posted for a spec "
    "valid from the start: the `Accepted` condition says so.",
)
INVALID_SPEC_EVENT: Final = SHARED.event(INVALID_SPEC, "Warning", "The spec is invalid; the message says where.")
RESOURCE_EXISTS_EVENT: Final = SHARED.event(
    RESOURCE_EXISTS, "Warning", "A child's name is taken by an object this one does not control; the message names it."
)
SPEC_NOT_APPLIED: Final = SHARED.event(
    "SpecNotApplied", "Warning", "A child refused or kept back part of the spec (SpecApplied turned False)."
)

# Why a pod cannot start, in the scheduler's or the kubelet's own reason (which the operator reads in
# the pod's status), and what it means for the pod. Each kind whose conditions pass them on declares
# them in its own vocabulary, saying which pods and which conditions.
POD_START_REASONS: Final = {
    "Unschedulable": "no node can take it (node selector, affinity, GPUs, tolerations, quota).",
    "SchedulingGated": "a scheduling gate holds it (a queue has not admitted it).",
    "ErrImagePull": "the kubelet cannot pull its image (a wrong name or tag, a missing pull secret).",
    "ImagePullBackOff": "the kubelet failed to pull its image and backs off before trying again.",
    "InvalidImageName": "its image reference does not parse.",
    "CreateContainerConfigError": "a Secret or ConfigMap its containers name is missing.",
    "CreateContainerError": "the container runtime cannot create a container.",
    "RunContainerError": "the container runtime cannot start a container.",
    "CrashLoopBackOff": "a container keeps exiting and the kubelet backs off before restarting it.",
}


@dataclass(frozen=True)
class Waiting:
    """Why an object has nothing to run yet: the reason of its Ready condition, and a message."""

    reason: str
    message: str


class Condition(ApiModel):
    """One aspect of the object's current state (the metav1.Condition schema)."""

    type: Annotated[
        str,
        StringConstraints(
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
            max_length=316,
        ),
    ] = Field(description="Type of condition in CamelCase, e.g. Ready.")
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)] = (
        Field(description="Machine-readable CamelCase reason for the last transition.")
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="Human-readable details about the last transition."
    )
    last_transition_time: datetime = Field(description="When the condition last changed from one status to another.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set from."
    )


Conditions = Annotated[
    list[Condition],
    ListType(("type",)),
    Field(
        default=[],
        max_length=32,
        description="The latest observations of the object's state.",
    ),
]
