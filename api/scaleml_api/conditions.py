"""Status conditions in the shape of the rest of Kubernetes (metav1.Condition), and their vocabulary.

Condition types and reasons are part of the API: `kubectl wait --for=condition=Ready`, Argo CD
health checks and alerts match on them, so they are constants here and documented in the README.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from scaleml_api.base import ApiModel

# Condition types.
READY = "Ready"
ACCEPTED = "Accepted"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
DRIFT_DETECTED = "DriftDetected"
# TrainingJob.
CREATED = "Created"
RUNNING = "Running"
RESTARTING = "Restarting"
SUSPENDED = "Suspended"
SPEC_APPLIED = "SpecApplied"
# DriftMonitor.
RETRAINING = "Retraining"

# Reasons.
SPEC_ACCEPTED = "SpecAccepted"
INVALID_SPEC = "InvalidSpec"
RECONCILING = "Reconciling"

ConditionStatus = Literal["True", "False", "Unknown"]


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
    Field(
        default=[],
        max_length=32,
        description="The latest observations of the object's state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]
