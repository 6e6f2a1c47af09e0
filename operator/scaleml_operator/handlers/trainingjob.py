"""TrainingJob: accept the spec, apply its children, report status from its Job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf

from scaleml_operator.api.conditions import SPEC_APPLIED
from scaleml_operator.api.kinds import TRAINING_JOB
from scaleml_operator.builders import trainingjob as build
from scaleml_operator.builders.meta import MANAGED_BY, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.acceptance import OWN_MANAGERS, accept
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.handlers.status import Written, write_status
from scaleml_operator.kube import apply as kube
from scaleml_operator.status.acceptance import event_message
from scaleml_operator.status.conditions import Conditions
from scaleml_operator.status.trainingjob import observed, phase_event
from scaleml_workloads.contract.base import API_VERSION
from scaleml_workloads.contract.training import TrainingJobSpec

OWNER_LABEL: Final = "scaleml.dev/trainingjob"
_WORKER_SELECTOR: Final = {"app.kubernetes.io/name": build.COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY}


def _selector(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in {**_WORKER_SELECTOR, OWNER_LABEL: name}.items())


def _observe(name: str, namespace: str, status: dict[str, Any], generation: int | None) -> dict[str, Any]:
    job = kube.get("batch/v1", "Job", name, namespace)
    pods = kube.list_objects("v1", "Pod", namespace, _selector(name)) if job else []
    return observed(status, job=job, pods=pods, generation=generation, now=datetime.now(UTC))


def _apply_children(owner: Owner, spec: TrainingJobSpec, image: str) -> str:
    """Applies every child; returns what of the spec could not reach the running Job."""
    *others, desired_job = build.children(owner, spec, image)
    for manifest in others:
        kube.apply(manifest)
    live = kube.get("batch/v1", "Job", owner.name, owner.namespace)
    job, problem = build.job_to_apply(desired_job, live)
    if job is not None:
        kube.apply(job)
    return problem


@kopf.on.resume(*TRAINING_JOB.group_version, id="reconcile")
@kopf.on.create(*TRAINING_JOB.group_version, id="reconcile")
@kopf.on.update(*TRAINING_JOB.group_version, id="reconcile", field="spec")
@instrumented(TRAINING_JOB.kind, OWN_MANAGERS)
async def reconcile(body: kopf.Body, meta: kopf.Meta, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    verdict = accept(TRAINING_JOB, body, status)
    spec = verdict.spec
    problem = ""
    if isinstance(spec, TrainingJobSpec):
        config: OperatorConfig = memo.get("config", OperatorConfig())
        owner = Owner(TRAINING_JOB.kind, meta["name"], meta["namespace"], meta["uid"])
        problem = await asyncio.to_thread(_apply_children, owner, spec, spec.image or config.workload_image)
        if problem:
            kopf.warn(body, reason="SpecNotApplied", message=problem)
    generation = meta.get("generation")

    def compose(training_job: dict[str, Any]) -> dict[str, Any]:
        current = verdict.over(training_job.get("status") or {})
        if not isinstance(spec, TrainingJobSpec):
            return current
        current["conditions"] = Conditions(current["conditions"], generation=generation, now=datetime.now(UTC)).mark(
            SPEC_APPLIED, not problem, "ImmutableWhileRunning" if problem else "Applied", problem
        )
        return {**current, **_observe(meta["name"], meta["namespace"], current, generation)}

    await _report(await asyncio.to_thread(write_status, TRAINING_JOB, meta["name"], meta["namespace"], compose))


@kopf.on.event("batch", "v1", "jobs", labels={**_WORKER_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="job-status")
@instrumented("Job", OWN_MANAGERS)
async def job_changed(type: str, body: kopf.Body, labels: kopf.Labels, namespace: str | None, **_: Any) -> None:
    name, namespace = labels[OWNER_LABEL], namespace or ""
    if type == "DELETED":
        # A Job that was finished when it went away was removed by the TTL controller (or by hand).
        if build.job_finished(body):
            await asyncio.to_thread(_expire, name, namespace)
        return

    def compose(training_job: dict[str, Any]) -> dict[str, Any]:
        status = training_job.get("status") or {}
        return _observe(name, namespace, status, training_job["metadata"].get("generation"))

    await _report(await asyncio.to_thread(write_status, TRAINING_JOB, name, namespace, compose))


async def _report(written: Written | None) -> None:
    """Posts the Event of a phase change."""
    if written is None or "phase" not in written.changed:
        return
    training_job = written.body
    event = phase_event(written.changed["phase"], training_job.get("status", {}))
    if event is not None:
        kopf.event(
            kopf.Body(cast(kopf.RawBody, training_job)),
            type=event.type,
            reason=event.reason,
            message=event_message(event.message),
        )


def _expire(name: str, namespace: str) -> None:
    training_job = kube.get(API_VERSION, TRAINING_JOB.kind, name, namespace)
    if training_job and training_job["spec"].get("runPolicy", {}).get("ttlSecondsAfterFinished") is not None:
        # The finished Job's time to live is over: the TrainingJob's is too.
        kube.delete(API_VERSION, TRAINING_JOB.kind, name, namespace)
