"""ModelDeployment: accept the spec, find the model's version, apply Triton's children, report their state.

Three things move a ModelDeployment besides its own spec: its Deployment and pods (status), and
the TrainingJobs that export its model (a new version rolls the Deployment). Each of them runs
the same `_refresh`, which re-applies the children when they are missing or serve a stale version.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final, cast

import kopf

from scaleml_operator.api.conditions import SPEC_APPLIED
from scaleml_operator.api.kinds import MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_operator.api.modeldeployment import MODEL_VERSION_ANNOTATION, Waiting
from scaleml_operator.api.validation import parse_spec_or_none
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import MANAGED_BY, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.acceptance import OWN_MANAGERS, accept, record_rejection
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.handlers.status import Written, write_status
from scaleml_operator.kube import apply as kube
from scaleml_operator.status.acceptance import Verdict, event_message
from scaleml_operator.status.conditions import Conditions
from scaleml_operator.status.modeldeployment import events, observed
from scaleml_workloads.contract.base import API_VERSION
from scaleml_workloads.contract.serving import ModelDeploymentSpec

OWNER_LABEL: Final = "scaleml.dev/modeldeployment"
_SERVING_SELECTOR: Final = {"app.kubernetes.io/name": build.COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY}

# (namespace, claim, model) -> the versions TrainingJobs exported into that model directory.
Exports = kopf.Index[tuple[str, str, str], int]
# namespace -> the ModelDeployments serving a TrainingJob's model.
Followers = kopf.Index[str, str]


@kopf.index(*TRAINING_JOB.group_version, id="exported_versions")
def exported_versions(namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[Any, int] | None:
    version = status.get("modelVersion")
    output = spec.get("output") or {}
    if not isinstance(version, int):
        return None
    return {(namespace or "", output.get("volumeClaim", ""), output.get("modelName", "")): version}


@kopf.index(*MODEL_DEPLOYMENT.group_version, id="training_job_followers")
def training_job_followers(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[str, str] | None:
    return {namespace or "": name} if (spec.get("model") or {}).get("fromTrainingJob") else None


def _selector(name: str) -> str:
    return ",".join(f"{key}={value}" for key, value in {**_SERVING_SELECTOR, OWNER_LABEL: name}.items())


def _resolve(spec: ModelDeploymentSpec, namespace: str, exported: Exports) -> build.ModelSource | Waiting:
    if spec.model.repository is not None:
        return build.resolve_source(spec, None, None)
    training_job = kube.get(API_VERSION, TRAINING_JOB.kind, spec.model.from_training_job, namespace)
    newest = None
    if training_job is not None:
        output = training_job["spec"]["output"]
        newest = max(exported.get((namespace, output["volumeClaim"], output["modelName"]), ()), default=None)
    return build.resolve_source(spec, training_job, newest)


def _stale(deployment: dict[str, Any] | None, source: build.ModelSource | Waiting) -> bool:
    if isinstance(source, Waiting):
        return False
    if deployment is None:
        return True
    annotated = deployment["metadata"].get("annotations", {}).get(MODEL_VERSION_ANNOTATION)
    return bool(annotated != (str(source.version) if source.version is not None else None))


def _refresh(
    name: str,
    namespace: str,
    config: OperatorConfig,
    exported: Exports,
    *,
    apply_all: bool,
    verdict: Verdict | None = None,
) -> Written | None:
    """Re-applies the children if `apply_all` or they are stale, then writes the status they show.

    `verdict` is the acceptance verdict of a spec change, written with the rest.
    """
    model_deployment = kube.get(API_VERSION, MODEL_DEPLOYMENT.kind, name, namespace)
    if model_deployment is None or model_deployment["metadata"].get("deletionTimestamp"):
        return None
    spec = parse_spec_or_none(MODEL_DEPLOYMENT, model_deployment.get("spec") or {})
    if not isinstance(spec, ModelDeploymentSpec):
        # The reconcile handler reported it; nothing is applied for a spec that was not accepted.
        return None
    meta = model_deployment["metadata"]
    owner = Owner(MODEL_DEPLOYMENT.kind, name, namespace, meta["uid"])
    source = _resolve(spec, namespace, exported)
    deployment = kube.get("apps/v1", "Deployment", build.deployment_name(name), namespace)
    rejected: list[str] | None = None
    if apply_all or _stale(deployment, source):
        images = (spec.triton_image or config.triton_image, config.workload_image)
        rejected = _apply(owner, build.children(owner, spec, None if isinstance(source, Waiting) else source, images))
        deployment = kube.get("apps/v1", "Deployment", build.deployment_name(name), namespace)
    pods = kube.list_objects("v1", "Pod", namespace, _selector(name)) if deployment else []

    def compose(fresh: dict[str, Any]) -> dict[str, Any]:
        status = fresh.get("status") or {}
        current = verdict.over(status) if verdict else dict(status)
        generation = fresh["metadata"].get("generation")
        now = datetime.now(UTC)
        current.update(
            observed(
                current,
                deployment=deployment,
                pods=pods,
                waiting=source if isinstance(source, Waiting) else None,
                version=None if isinstance(source, Waiting) else source.version,
                endpoints=build.endpoints(owner),
                selector=_selector(name),
                generation=generation,
                now=now,
            )
        )
        if rejected is not None:
            current["conditions"] = Conditions(current["conditions"], generation=generation, now=now).mark(
                SPEC_APPLIED, not rejected, "ChildRejected" if rejected else "Applied", " ".join(rejected)
            )
        return current

    return write_status(MODEL_DEPLOYMENT, name, namespace, compose)


def _apply(owner: Owner, children: build.Children) -> list[str]:
    """Applies every child it can; returns what the API server refused, and why (the spec must change)."""
    rejected = []
    for manifest in children.apply:
        try:
            kube.apply(manifest)
        except kube.RejectedError as error:
            rejected.append(f"{manifest['kind']} {manifest['metadata']['name']}: {error}")
    for api_version, kind, child in children.absent:
        kube.delete_owned(api_version, kind, child, owner.namespace, owner.uid)
    return rejected


def _post_events(written: Written | None) -> None:
    if written is None:
        return
    body = kopf.Body(cast(kopf.RawBody, written.body))
    status = written.body.get("status", {})
    for event in events(written.previous, status):
        kopf.event(body, type=event.type, reason=event.reason, message=event_message(event.message))


@kopf.on.resume(*MODEL_DEPLOYMENT.group_version, id="reconcile")
@kopf.on.create(*MODEL_DEPLOYMENT.group_version, id="reconcile")
@kopf.on.update(*MODEL_DEPLOYMENT.group_version, id="reconcile", field="spec")
@instrumented(MODEL_DEPLOYMENT.kind, OWN_MANAGERS)
async def reconcile(
    body: kopf.Body,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    exported_versions: Exports,
    **_: Any,
) -> None:
    verdict = accept(MODEL_DEPLOYMENT, body, status)
    if not isinstance(verdict.spec, ModelDeploymentSpec):
        await record_rejection(MODEL_DEPLOYMENT, meta, verdict)
        return
    name, namespace = meta["name"], meta["namespace"]
    config: OperatorConfig = memo.get("config", OperatorConfig())
    written = await asyncio.to_thread(
        _refresh, name, namespace, config, exported_versions, apply_all=True, verdict=verdict
    )
    _post_events(written)


@kopf.on.event(
    "apps", "v1", "deployments", labels={**_SERVING_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="deployment-status"
)
@kopf.on.event("", "v1", "pods", labels={**_SERVING_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="pod-status")
@instrumented("Deployment", OWN_MANAGERS)
async def child_changed(
    labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, exported_versions: Exports, **_: Any
) -> None:
    config: OperatorConfig = memo.get("config", OperatorConfig())
    # A deleted Deployment is stale too: it comes back.
    written = await asyncio.to_thread(
        _refresh, labels[OWNER_LABEL], namespace or "", config, exported_versions, apply_all=False
    )
    _post_events(written)


@kopf.on.event(*TRAINING_JOB.group_version, when=lambda status, **_: bool(status.get("modelVersion")), id="new-version")
@instrumented(TRAINING_JOB.kind, OWN_MANAGERS)
async def training_job_exported(
    namespace: str | None, memo: kopf.Memo, exported_versions: Exports, training_job_followers: Followers, **_: Any
) -> None:
    """A TrainingJob exported a version: deployments of the same model that serve an older one roll."""
    config: OperatorConfig = memo.get("config", OperatorConfig())
    for name in set(training_job_followers.get(namespace or "", ())):
        written = await asyncio.to_thread(_refresh, name, namespace or "", config, exported_versions, apply_all=False)
        _post_events(written)
