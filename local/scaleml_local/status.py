"""The status the supervisor writes: the fields of each kind's status model, in the cluster's vocabulary.

On a cluster the operator derives a status from Jobs, Deployments and pods; here the facts are local
processes, so the same fields and condition types are set from those facts, with the reasons the
API declares. What does not depend on a Job or a Deployment is the operator's own code: the
verdict on the spec (`acceptance.judge`) and a DriftMonitor's Ready, Retraining and DriftDetected
conditions (`status.driftmonitor`). No field outside the kind's status model is ever written: the
tests validate what these functions return against `kind.status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scaleml_api.conditions import READY, Waiting
from scaleml_api.v1alpha1 import modeldeployment as md
from scaleml_api.v1alpha1 import trainingjob as tj
from scaleml_api.v1alpha1.driftmonitor import RETRAIN_REJECTED
from scaleml_operator.builders.retraining import Retraining
from scaleml_operator.status import driftmonitor
from scaleml_operator.status.conditions import Conditions, timestamp
from scaleml_operator.status.modeldeployment import promotion_status
from scaleml_operator.status.promotion import Promotion

Status = Mapping[str, Any]


def _conditions(current: Status, now: datetime) -> Conditions:
    # Local objects have no metadata.generation: the conditions carry no observedGeneration.
    return Conditions(current.get("conditions", []), generation=None, now=now)


def training(current: Status, /, phase: tj.Phase, message: str = "", *, now: datetime) -> dict[str, Any]:
    """A TrainingJob when torchrun starts (Running), exits (Succeeded, Failed) or is held back (Suspended).

    The cluster's conditions but Created and Restarting: there is no Job, and torchrun runs with
    --max-restarts=0. `message` goes on the condition the phase makes True.
    """
    conditions = _conditions(current, now)
    succeeded, failed, running = phase == "Succeeded", phase == "Failed", phase == "Running"
    conditions.mark(
        tj.SUCCEEDED,
        succeeded,
        tj.COMPLETED if succeeded else tj.FAILED if failed else tj.NOT_FINISHED,
        message if succeeded else "",
    )
    conditions.mark(tj.FAILED, failed, tj.JOB_FAILED if failed else tj.NO_FAILURE, message if failed else "")
    suspended = phase == "Suspended"
    conditions.mark(tj.SUSPENDED, suspended, tj.JOB_SUSPENDED if suspended else tj.NOT_SUSPENDED)
    # Not running, the reason is the phase, as on the cluster.
    conditions.mark(tj.RUNNING, running, tj.WORKERS_RUNNING if running else phase, message if running else "")
    patch: dict[str, Any] = {"phase": phase, "conditions": conditions.items}
    if running:
        patch["startTime"] = timestamp(now)
    if succeeded or failed:
        patch["completionTime"] = timestamp(now)
    return patch


def serving(
    current: Status,
    /,
    phase: md.DeploymentPhase,
    reason: str,
    message: str,
    *,
    now: datetime,
    promotion: Promotion | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A ModelDeployment: `reason` and `message` say why it is Ready or not; Progressing and Degraded follow.

    Pending waits for a model version (the reason is the one `resolve_source` gives, or a version
    the gates hold back), Progressing waits for the agent or Triton, Failed is a process that exited
    (Degraded, with its log). `promotion` is what the gates said, as on a cluster.
    """
    conditions = _conditions(current, now)
    gates = promotion_status(current, conditions, promotion, now)
    ready = phase == "Ready"
    conditions.mark(READY, ready, reason, message)
    if phase == "Failed":
        conditions.mark(md.DEGRADED, True, reason, message)
    else:
        rollout = reason if phase == "Pending" else md.ROLLOUT_COMPLETE if ready else md.ROLLOUT_IN_PROGRESS
        conditions.mark(md.PROGRESSING, not ready, rollout, message)
        conditions.mark(md.DEGRADED, False, md.NO_FAILURE)
    return {"phase": phase, "conditions": conditions.items, **gates, **fields}


def monitoring(
    current: Status,
    /,
    *,
    reference: Waiting | int | None,
    running: bool,
    retraining: Retraining,
    created: str | None,
    refused: str = "",
    now: datetime,
) -> dict[str, Any]:
    """A DriftMonitor, with the operator's own conditions; `reference` is the reference version, or why it waits.

    The monitor's process stands for its Deployment: one available replica while it runs. `created`
    is the retraining TrainingJob that exists now (made this time or before), `refused` why local
    mode could not store the one `retraining` asked for.
    """
    waiting = reference if isinstance(reference, Waiting) else None
    patch = driftmonitor.observed(
        current,
        deployment={"status": {"availableReplicas": int(running)}},
        waiting=waiting,
        reference_version=None if isinstance(reference, Waiting) else reference,
        generation=None,
        now=now,
    )
    active, reason, message = retraining.active, retraining.reason, retraining.message
    if refused:
        active, reason, message = False, RETRAIN_REJECTED, refused
    condition = (active, reason, message)
    last = (created, timestamp(now), retraining.rule or "drift") if created else retraining.newest
    patch.update(driftmonitor.retrained({**current, **patch}, condition, last=last, generation=None, now=now))
    return patch
