"""ModelDeployment: reconcile on its spec; refresh on its Deployment, its pods and new exports of its model."""

from __future__ import annotations

from typing import Any

import kopf

from scaleml_api.v1alpha1 import MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import PROMOTE_ANNOTATION
from scaleml_operator.handlers.loop import refresh_soon
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.reconcile.modeldeployment import (
    EVALUATIONS_INDEX,
    EXPORTS_INDEX,
    OWNER_LABEL,
    RECONCILER,
    SERVING_SELECTOR,
)

# (namespace, claim, model) -> the versions TrainingJobs exported into that model directory.
Exports = kopf.Index[tuple[str, str, str], int]
# namespace -> the ModelDeployments serving a TrainingJob's model.
Followers = kopf.Index[str, str]


# Coroutines, as every index function: see handlers.cache.
@kopf.index(*TRAINING_JOB.group_version, id=EXPORTS_INDEX)
async def exported_versions(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[Any, int] | None:
    version = status.get("modelVersion")
    output = spec.get("output") or {}
    if not isinstance(version, int):
        return None
    return {(namespace or "", output.get("volumeClaim", ""), output.get("modelName", "")): version}


@kopf.index(*TRAINING_JOB.group_version, id=EVALUATIONS_INDEX)
async def version_evaluations(
    namespace: str | None, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[Any, Any] | None:
    """The evaluation each exported version was written with, which the promotion gates judge."""
    version, evaluation = status.get("modelVersion"), status.get("evaluation")
    output = spec.get("output") or {}
    if not isinstance(version, int) or not evaluation:
        return None
    return {(namespace or "", output.get("volumeClaim", ""), output.get("modelName", ""), version): evaluation}


@kopf.index(*MODEL_DEPLOYMENT.group_version, id="training_job_followers")
async def training_job_followers(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[str, str] | None:
    return {namespace or "": name} if (spec.get("model") or {}).get("fromTrainingJob") else None


@kopf.on.event(
    "apps", "v1", "deployments", labels={**SERVING_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="deployment-status"
)
@kopf.on.event("", "v1", "pods", labels={**SERVING_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="pod-status")
@instrumented("Deployment")
async def child_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    # A deleted Deployment is stale too: it comes back.
    refresh_soon(RECONCILER, labels[OWNER_LABEL], namespace, memo, kwargs)


def _promotes_held_version(annotations: kopf.Annotations, status: kopf.Status, **_: Any) -> bool:
    held = status.get("candidateVersion")
    return held is not None and annotations.get(PROMOTE_ANNOTATION, "").strip() == str(held)


# An annotation changes no generation, so the reconcile of the spec does not see it: this does.
@kopf.on.event(*MODEL_DEPLOYMENT.group_version, when=_promotes_held_version, id="promote-annotation")
@instrumented(MODEL_DEPLOYMENT.kind)
async def promote_annotated(name: str, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    refresh_soon(RECONCILER, name, namespace, memo, kwargs)


@kopf.on.event(*TRAINING_JOB.group_version, when=lambda status, **_: bool(status.get("modelVersion")), id="new-version")
@instrumented(TRAINING_JOB.kind)
async def training_job_exported(namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A TrainingJob exported a version: deployments of the same model that serve an older one roll."""
    followers: Followers = kwargs["training_job_followers"]
    for name in set(followers.get(namespace or "", ())):
        refresh_soon(RECONCILER, name, namespace, memo, kwargs)
