"""DriftMonitor: accept the spec, find what to read, run the monitor, and retrain when drift persists.

The monitor pod writes the drift results into the status; each such write is an event here, on
which the retraining policy is evaluated. The served model's version decides the reference
profile, so a ModelDeployment that rolls to a new version moves its monitors along.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, Final

import kopf

from scaleml_operator.api.kinds import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_operator.api.modeldeployment import Waiting
from scaleml_operator.api.validation import InvalidSpecError, parse_spec, parse_spec_or_none
from scaleml_operator.builders import driftmonitor as build
from scaleml_operator.builders import retraining
from scaleml_operator.builders.meta import MANAGED_BY, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.acceptance import OWN_MANAGERS, accept, record_rejection
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.handlers.status import write_status
from scaleml_operator.kube import apply as kube
from scaleml_operator.status.acceptance import Verdict, event_message
from scaleml_operator.status.conditions import timestamp
from scaleml_operator.status.driftmonitor import drift_condition, observed
from scaleml_operator.status.driftmonitor import retraining as retraining_conditions
from scaleml_workloads.contract.base import API_VERSION
from scaleml_workloads.contract.monitoring import DriftMonitorSpec

log = logging.getLogger(__name__)

OWNER_LABEL: Final = "scaleml.dev/driftmonitor"
_MONITOR_SELECTOR: Final = {"app.kubernetes.io/name": build.COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY}

# (namespace, ModelDeployment) -> the DriftMonitors watching it.
Watchers = kopf.Index[tuple[str, str], str]


@kopf.index(*DRIFT_MONITOR.group_version, id="drift_monitors_by_target")
def drift_monitors_by_target(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, str]:
    return {(namespace or "", (spec.get("target") or {}).get("modelDeployment", "")): name}


def _inputs(spec: DriftMonitorSpec, namespace: str) -> build.Inputs | Waiting:
    model_deployment = kube.get(API_VERSION, MODEL_DEPLOYMENT.kind, spec.target.model_deployment, namespace)
    training_job = None
    if spec.reference.from_training_job:
        training_job = kube.get(API_VERSION, TRAINING_JOB.kind, spec.reference.from_training_job, namespace)
    return build.resolve_inputs(spec, model_deployment, training_job)


def _refresh(
    name: str, namespace: str, config: OperatorConfig, *, apply_all: bool, verdict: Verdict | None = None
) -> None:
    """Re-applies the children if `apply_all` or the reference moved, then writes the operator's status fields."""
    monitor = kube.get(API_VERSION, DRIFT_MONITOR.kind, name, namespace)
    if monitor is None or monitor["metadata"].get("deletionTimestamp"):
        return
    spec = parse_spec_or_none(DRIFT_MONITOR, monitor.get("spec") or {})
    if not isinstance(spec, DriftMonitorSpec):
        return
    owner = Owner(DRIFT_MONITOR.kind, name, namespace, monitor["metadata"]["uid"])
    inputs = _inputs(spec, namespace)
    deployment = kube.get("apps/v1", "Deployment", build.monitor_name(name), namespace)
    live_reference = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(build.REFERENCE_ANNOTATION)
    stale = isinstance(inputs, build.Inputs) and live_reference != build.reference(inputs)
    if apply_all or stale:
        ready = inputs if isinstance(inputs, build.Inputs) else None
        for manifest in build.children(owner, spec, ready, config.workload_image):
            kube.apply(manifest)
        deployment = kube.get("apps/v1", "Deployment", build.monitor_name(name), namespace)

    def compose(fresh: dict[str, Any]) -> dict[str, Any]:
        status = fresh.get("status") or {}
        current = verdict.over(status) if verdict else dict(status)
        current.update(
            observed(
                current,
                deployment=deployment,
                waiting=inputs if isinstance(inputs, Waiting) else None,
                reference_version=inputs.reference_version if isinstance(inputs, build.Inputs) else None,
                generation=fresh["metadata"].get("generation"),
                now=datetime.now(UTC),
            )
        )
        return current

    write_status(DRIFT_MONITOR, name, namespace, compose)


def _retrain(monitor: dict[str, Any]) -> tuple[str, str, str] | None:
    """Applies the retraining policy once; returns the Event (type, reason, message) to post, if any."""
    spec = parse_spec_or_none(DRIFT_MONITOR, monitor.get("spec") or {})
    if not isinstance(spec, DriftMonitorSpec):
        return None
    meta, status = monitor["metadata"], monitor.get("status") or {}
    if not spec.retrain.enabled:
        _record(monitor, False, "Disabled", "spec.retrain.enabled is false.", None)
        return None
    namespace = meta["namespace"]
    last_name = status.get("lastRetrainJob")
    last_job = kube.get(API_VERSION, TRAINING_JOB.kind, last_name, namespace) if last_name else None
    decision = retraining.decide(spec.retrain, status, last_job, datetime.now(UTC))
    created, event = None, None
    if decision.create:
        source = _source_job(spec, namespace)
        drift_since = str(status["driftSince"])
        if source is None:
            decision = retraining.Decision(False, "NoSourceTrainingJob", "The served model's TrainingJob is gone.")
        else:
            name = retraining.job_name(source["metadata"]["name"], meta["uid"], drift_since)
            job = retraining.retraining_job(
                source, spec.retrain, name=name, monitor=meta["name"], drift_since=drift_since
            )
            try:
                parse_spec(TRAINING_JOB, job["spec"])
            except InvalidSpecError as error:
                message = f"spec.retrain.trainingJobOverrides make an invalid TrainingJob: {error}"
                decision = retraining.Decision(False, "InvalidOverrides", message)
                event = ("Warning", "InvalidOverrides", message)
            else:
                # False: it exists, created before a restart for the same drift. Recorded, not repeated.
                if not kube.create(job):
                    log.info("TrainingJob %s/%s exists already: recording it", namespace, name)
                else:
                    origin = source["metadata"]["name"]
                    event = (
                        "Normal",
                        "RetrainTriggered",
                        f"Created TrainingJob {name} from {origin}: {decision.message}",
                    )
                created, last_job = name, job
    running = last_job is not None and retraining.running(last_job)
    if running and last_job is not None:
        reason, message = "TrainingJobRunning", f"TrainingJob {last_job['metadata']['name']} retrains the model."
    else:
        reason, message = decision.reason, decision.message
    if spec.retrain.use_captured_data:
        message += f" {retraining.CAPTURED_DATA_NOTE}"
    _record(monitor, running, reason, message, created)
    return event


def _source_job(spec: DriftMonitorSpec, namespace: str) -> dict[str, Any] | None:
    model_deployment = kube.get(API_VERSION, MODEL_DEPLOYMENT.kind, spec.target.model_deployment, namespace)
    jobs = {job["metadata"]["name"]: job for job in kube.list_objects(API_VERSION, TRAINING_JOB.kind, namespace, "")}
    source = retraining.source_job(spec, model_deployment, jobs)
    return dict(source) if source is not None else None


def _record(monitor: dict[str, Any], active: bool, reason: str, message: str, created: str | None) -> None:
    meta = monitor["metadata"]

    def compose(fresh: dict[str, Any]) -> dict[str, Any]:
        status = fresh.get("status") or {}
        generation, now = fresh["metadata"].get("generation"), datetime.now(UTC)
        conditions = retraining_conditions(
            status, active=active, reason=reason, message=message, generation=generation, now=now
        )
        update: dict[str, Any] = {
            "conditions": drift_condition({**status, "conditions": conditions}, generation=generation, now=now)
        }
        if created and status.get("lastRetrainJob") != created:
            update.update(
                lastRetrainJob=created,
                lastRetrainTime=timestamp(now),
                retrainsTriggered=int(status.get("retrainsTriggered") or 0) + 1,
            )
        return update

    write_status(DRIFT_MONITOR, meta["name"], meta["namespace"], compose)


@kopf.on.resume(*DRIFT_MONITOR.group_version, id="reconcile")
@kopf.on.create(*DRIFT_MONITOR.group_version, id="reconcile")
@kopf.on.update(*DRIFT_MONITOR.group_version, id="reconcile", field="spec")
@instrumented(DRIFT_MONITOR.kind, OWN_MANAGERS)
async def reconcile(body: kopf.Body, meta: kopf.Meta, status: kopf.Status, memo: kopf.Memo, **_: Any) -> None:
    verdict = accept(DRIFT_MONITOR, body, status)
    if not isinstance(verdict.spec, DriftMonitorSpec):
        await record_rejection(DRIFT_MONITOR, meta, verdict)
        return
    name, namespace = meta["name"], meta["namespace"]
    config: OperatorConfig = memo.get("config", OperatorConfig())
    await asyncio.to_thread(_refresh, name, namespace, config, apply_all=True, verdict=verdict)


@kopf.on.event(
    "apps", "v1", "deployments", labels={**_MONITOR_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="monitor-status"
)
@instrumented("Deployment", OWN_MANAGERS)
async def monitor_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config", OperatorConfig())
    await asyncio.to_thread(_refresh, labels[OWNER_LABEL], namespace or "", config, apply_all=False)


@kopf.on.event(*MODEL_DEPLOYMENT.group_version, id="target-changed")
@instrumented(MODEL_DEPLOYMENT.kind, OWN_MANAGERS)
async def target_changed(
    name: str, namespace: str | None, memo: kopf.Memo, drift_monitors_by_target: Watchers, **_: Any
) -> None:
    """A ModelDeployment changed (capture turned on, a new version served): its monitors follow."""
    config: OperatorConfig = memo.get("config", OperatorConfig())
    for monitor in set(drift_monitors_by_target.get((namespace or "", name), ())):
        await asyncio.to_thread(_refresh, monitor, namespace or "", config, apply_all=False)


@kopf.on.event(*DRIFT_MONITOR.group_version, id="retrain")
@instrumented(DRIFT_MONITOR.kind, OWN_MANAGERS)
async def drift_reported(type: str, body: kopf.Body, **_: Any) -> None:
    """Every write of the monitor's results (and every end of a retraining job) re-applies the policy."""
    if type == "DELETED":
        return
    event = await asyncio.to_thread(_retrain, dict(body))
    if event is not None:
        kind, reason, message = event
        kopf.event(body, type=kind, reason=reason, message=event_message(message))
