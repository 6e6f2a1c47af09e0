"""TrainingJob's part of the loop: it reads its Job and the Job's pods (from the watches' caches); the rest is pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from scaleml_api.runtime import Lineage
from scaleml_api.v1alpha1 import TRAINING_JOB
from scaleml_api.v1alpha1.trainingjob import FINISHED_PHASES, TrainingJobSpec
from scaleml_operator.builders import retraining
from scaleml_operator.builders import trainingjob as build
from scaleml_operator.builders.meta import MANAGED_BY, Children, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.kube import apply as kube
from scaleml_operator.kube import events as kube_events
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile.loop import Applied, Context, Reconciler, controlled_by
from scaleml_operator.status import trainingjob as status

OWNER_LABEL: Final = "scaleml.dev/trainingjob"
# The Job controller's Event reason when the API server refuses a pod it creates.
FAILED_CREATE: Final = "FailedCreate"
WORKER_SELECTOR: Final = {"app.kubernetes.io/name": build.COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY}


@dataclass(frozen=True)
class Inputs:
    """The Job as it runs (None before it is created), its pods, the drift episode that created the
    job, whether the TrainingJob already ran to its end, and why the Job cannot create the pods it
    lacks (None: nothing says it cannot)."""

    job: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]]
    lineage: Lineage | None = None
    finished: bool = False
    refused: str | None = None


def selector(name: str) -> str:
    return ",".join(f"{key}={value}" for key, value in {**WORKER_SELECTOR, OWNER_LABEL: name}.items())


def read(owner: Owner, spec: TrainingJobSpec, parent: Mapping[str, Any], context: Context) -> Inputs:
    key = (owner.namespace, owner.name)
    job = cache.one(context.indexes, cache.JOBS, key)
    if job is not None and not controlled_by(job, owner.uid):
        # A Job of the name that is not this object's: its predecessor's (deleted, the garbage
        # collector not done yet) or someone else's. Its outcome is not this object's to report.
        job = None
    if job is not None and context.full and not build.job_finished(job):
        # The cache keeps Jobs without their pod template. A full run applies the Job again, and
        # where its template may not change, it copies the running one (build.job_to_apply).
        job = kube.get("batch/v1", "Job", owner.name, owner.namespace) or job
    pods = []
    if job is not None:
        # The pods of this Job, not those of a predecessor's going with theirs.
        pods = [
            pod
            for pod in cache.every(context.indexes, cache.TRAINING_PODS, key)
            if controlled_by(pod, job["metadata"]["uid"])
        ]
    finished = (parent.get("status") or {}).get("phase") in FINISHED_PHASES
    refused = None
    now = datetime.now(UTC)
    if job is not None and status.workers_missing(job, pods, now):
        # A pod the API server refuses (a quota, a policy) never exists: only the Job controller's
        # Events say why. Read only for a Job that lacks pods beyond a moment, so not per reconcile.
        refused = status.not_created(kube_events.about(owner.namespace, job["metadata"]["uid"], FAILED_CREATE), now)
    return Inputs(job, pods, retraining.lineage(parent["metadata"]), finished, refused)


def children(owner: Owner, spec: TrainingJobSpec, inputs: Inputs, config: OperatorConfig) -> Children:
    image = spec.image or config.workload_image
    return build.children(owner, spec, image, live_job=inputs.job, lineage=inputs.lineage, finished=inputs.finished)


def stale(inputs: Inputs) -> bool:
    """When the Job of a TrainingJob still to finish is missing (deleted, or not made yet because a
    predecessor's of the same name was in the way). A Job's own changes are observed, not undone."""
    return inputs.job is None and not inputs.finished


def observed(
    current: Mapping[str, Any],
    owner: Owner,
    spec: TrainingJobSpec,
    inputs: Inputs,
    applied: Applied,
    *,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    job = applied.get("Job", owner.name, inputs.job)
    min_workers = spec.elastic.min_workers if spec.elastic else None
    return status.observed(
        current,
        job=job,
        pods=inputs.pods,
        generation=generation,
        now=now,
        min_workers=min_workers,
        refused=inputs.refused,
    )


RECONCILER: Final = Reconciler(
    kind=TRAINING_JOB, read=read, children=children, stale=stale, observed=observed, events=status.events
)
