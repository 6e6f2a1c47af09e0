"""DriftMonitor's part of the loop: it reads what the monitor compares, its Deployment, and what retraining needs.

The monitor pod writes each window's results into the status; a new result (`lastCheckTime`) is a
trigger, as are the target ModelDeployment, the monitor's Deployment and the end of a retraining
TrainingJob. The served model's version decides the reference profile, so a ModelDeployment that
rolls to a new version moves its monitors along.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from scaleml_api.conditions import Waiting
from scaleml_api.v1alpha1 import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.driftmonitor import RETRAIN_REJECTED, DriftMonitorSpec
from scaleml_operator.builders import driftmonitor as build
from scaleml_operator.builders import retraining
from scaleml_operator.builders.meta import MANAGED_BY, Children, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile import modeldeployment as serving
from scaleml_operator.reconcile.loop import Applied, Context, Reconciler, controlled_by
from scaleml_operator.status import driftmonitor as status
from scaleml_operator.status.conditions import timestamp

OWNER_LABEL: Final = "scaleml.dev/driftmonitor"
MONITOR_SELECTOR: Final = {"app.kubernetes.io/name": build.COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY}


@dataclass(frozen=True)
class Inputs:
    """What the monitor reads (or why it waits), its Deployment as it runs, and the retraining step's verdict."""

    reference: build.Inputs | Waiting
    deployment: Mapping[str, Any] | None
    retraining: retraining.Retraining


def read(owner: Owner, spec: DriftMonitorSpec, parent: Mapping[str, Any], context: Context) -> Inputs:
    namespace, current, indexes = owner.namespace, parent.get("status") or {}, context.indexes
    training_jobs = cache.PARENTS[TRAINING_JOB.kind]
    target = cache.one(indexes, cache.PARENTS[MODEL_DEPLOYMENT.kind], (namespace, spec.target.model_deployment))
    training_job = None
    if spec.reference.from_training_job:
        training_job = cache.one(indexes, training_jobs, (namespace, spec.reference.from_training_job))
    deployment = cache.one(indexes, cache.MONITOR_DEPLOYMENTS, (namespace, build.monitor_name(owner.name)))
    past = retrained(indexes, namespace, owner.name) if spec.retrain.enabled else []
    now = datetime.now(UTC)
    # The namespace's TrainingJobs are listed only when the policy wants a job now.
    wanted = spec.retrain.enabled and retraining.decide(spec.retrain, current, past, now).create
    source = None
    served = None
    if target is not None:
        served = serving.served_model(target, serving.deployment_of(indexes, namespace, target["metadata"]["name"]))
    if wanted:
        jobs = {job["metadata"]["name"]: job for job in cache.in_namespace(indexes, training_jobs, namespace)}
        source = retraining.source_job(spec, target, jobs, served)
    verdict = retraining.retrain(
        spec,
        parent["metadata"],
        current,
        past,
        source,
        now,
        allowed=retraining.AllowedCode(
            context.config.retrain_entrypoint_prefixes,
            context.config.retrain_image_prefixes,
            context.config.workload_image,
        ),
        model_deployment=target,
    )
    return Inputs(build.resolve_inputs(spec, target, training_job, served), deployment, verdict)


def retrained(indexes: Mapping[str, Any], namespace: str, monitor: str) -> list[retraining.Retrained]:
    """The TrainingJobs labelled as the monitor's retraining jobs, newest first, with their workers' Jobs (cached)."""
    jobs = []
    for name in set(cache.every(indexes, cache.RETRAININGS, (namespace, monitor))):
        job = cache.one(indexes, cache.PARENTS[TRAINING_JOB.kind], (namespace, name))
        if job is None:
            continue
        workers = cache.one(indexes, cache.JOBS, (namespace, name))
        # A Job of the name that another object controls (a predecessor's, going) says nothing of this one.
        jobs.append((job, workers if workers is not None and controlled_by(workers, job["metadata"]["uid"]) else None))
    return retraining.retrained(jobs)


def children(owner: Owner, spec: DriftMonitorSpec, inputs: Inputs, config: OperatorConfig) -> Children:
    reference = inputs.reference if isinstance(inputs.reference, build.Inputs) else None
    return build.children(owner, spec, reference, config.workload_image, retraining_job=inputs.retraining.job)


def stale(inputs: Inputs) -> bool:
    """The monitor's Deployment is missing or reads another reference than the one the target now serves."""
    if isinstance(inputs.reference, Waiting):
        return False
    live = ((inputs.deployment or {}).get("metadata", {}).get("annotations") or {}).get(build.REFERENCE_ANNOTATION)
    return live != build.reference(inputs.reference)


def observed(
    current: Mapping[str, Any],
    owner: Owner,
    spec: DriftMonitorSpec,
    inputs: Inputs,
    applied: Applied,
    *,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    reference = inputs.reference
    patch = status.observed(
        current,
        deployment=applied.get("Deployment", build.monitor_name(owner.name), inputs.deployment),
        waiting=reference if isinstance(reference, Waiting) else None,
        reference_version=reference.reference_version if isinstance(reference, build.Inputs) else None,
        generation=generation,
        now=now,
    )
    verdict, job = inputs.retraining, inputs.retraining.job
    active, reason, message = verdict.active, verdict.reason, verdict.message
    created = job["metadata"]["name"] if job is not None and job["metadata"]["name"] in applied.created else None
    if job is not None and created is None:
        active, reason, message = False, RETRAIN_REJECTED, _not_created(job["metadata"]["name"], applied)
    condition = (active, reason, message)
    last = (created, timestamp(now), verdict.rule or "drift") if created else verdict.newest
    patch.update(status.retrained({**current, **patch}, condition, last=last, generation=generation, now=now))
    return patch


def _not_created(name: str, applied: Applied) -> str:
    """Why the retraining job `name` was not created."""
    if applied.not_created:
        return " ".join(applied.not_created)
    if f"TrainingJob {name}" in applied.foreign:
        return f"TrainingJob {name} exists and this monitor did not make it: it is left untouched."
    return (
        f"TrainingJob {name} waits until the monitor's own children are applied (SpecApplied says what is in the way)."
    )


RECONCILER: Final = Reconciler(
    kind=DRIFT_MONITOR, read=read, children=children, stale=stale, observed=observed, events=status.events
)
