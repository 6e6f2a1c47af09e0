"""ModelDeployment's part of the loop: it reads the model's newest version, its Deployment and the pods.

Three things move a ModelDeployment besides its own spec: its Deployment and pods (status), and
the TrainingJobs that export its model (a new version rolls the Deployment). A refresh re-applies
the children only when the Deployment is missing or serves a stale version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from scaleml_api.conditions import Waiting
from scaleml_api.v1alpha1 import MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import (
    GATE_FAILED,
    MODEL_VERSION_ANNOTATION,
    ModelDeploymentSpec,
)
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import MANAGED_BY, Children, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile.loop import Applied, Context, Reconciler, controlled_by
from scaleml_operator.status import modeldeployment as status
from scaleml_operator.status.promotion import Promotion, promote_deployment

OWNER_LABEL: Final = "scaleml.dev/modeldeployment"
SERVING_SELECTOR: Final = {"app.kubernetes.io/name": build.COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY}
# The kopf index of the versions TrainingJobs exported: (namespace, claim, model) -> versions.
EXPORTS_INDEX: Final = "exported_versions"
# The kopf index of each exported version's evaluation: (namespace, claim, model, version) -> status.evaluation.
EVALUATIONS_INDEX: Final = "version_evaluations"


@dataclass(frozen=True)
class Inputs:
    """Where the model comes from (or why there is none yet), the Deployment as it runs, its pods, and
    what the promotion gates said of the newest version."""

    source: build.ModelSource | Waiting
    deployment: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]]
    promotion: Promotion | None = None


def selector(name: str) -> str:
    return ",".join(f"{key}={value}" for key, value in {**SERVING_SELECTOR, OWNER_LABEL: name}.items())


def _annotated_version(deployment: Mapping[str, Any] | None) -> int | None:
    """The version the Deployment is built for, from its annotation."""
    annotated = ((deployment or {}).get("metadata", {}).get("annotations") or {}).get(MODEL_VERSION_ANNOTATION, "")
    return int(annotated) if annotated.isdigit() else None


def served_version(deployment: Mapping[str, Any] | None, status: Mapping[str, Any]) -> int | None:
    """The version the Deployment is built for (its annotation), else the one the status last recorded."""
    if (annotated := _annotated_version(deployment)) is not None:
        return annotated
    recorded = status.get("servedVersion")
    return recorded if isinstance(recorded, int) else None


def _serves(deployment: Mapping[str, Any] | None, model: str) -> int | None:
    """The version of `model` the Deployment serves, if it serves that model."""
    served = build.served_model(deployment) if deployment is not None else None
    return served.version if served is not None and served.model == model else None


def _source(
    spec: ModelDeploymentSpec,
    parent: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    indexes: Mapping[str, Any],
) -> tuple[build.ModelSource | Waiting, Promotion | None]:
    """The version to serve, and what the promotion gates said of the newest (None when nothing is judged)."""
    namespace = parent["metadata"].get("namespace", "")
    training_job, served, model = None, None, None
    if spec.model.repository is None:
        training_job = cache.one(indexes, cache.PARENTS[TRAINING_JOB.kind], (namespace, spec.model.from_training_job))
        if training_job is not None:
            model = (training_job["spec"]["output"]["volumeClaim"], training_job["spec"]["output"]["modelName"])
        elif (served := served_model(parent, deployment)) is not None:
            # Gone after its model served: the model is the one its Deployment serves.
            model = (served.volume_claim, served.model_name)
    newest = None
    if model is not None:
        exported: Mapping[tuple[str, str, str], Iterable[int]] = indexes[EXPORTS_INDEX]
        known = exported.get((namespace, *model), ())
        # A version stays exported when the TrainingJob that exported it goes (a retraining job's
        # time to live): the one served, of the same model, is never rolled back for that.
        serving = _serves(deployment, "/".join(model))
        newest = max((*known, *([serving] if serving else [])), default=None)
    source = build.resolve_source(spec, training_job, newest, served)
    if isinstance(source, Waiting) or spec.model.repository is not None or isinstance(spec.model.version, int):
        return source, None
    key = (namespace, source.volume_claim, source.model_name, source.version)
    evaluation = next(iter(indexes[EVALUATIONS_INDEX].get(key, ())), None)
    serving_now = served_version(deployment, parent.get("status") or {})
    promotion = promote_deployment(parent, spec.promotion.gates, source.version, serving_now, evaluation)
    if promotion.version is None:
        return Waiting(GATE_FAILED, promotion.message), promotion
    # The newest version resolve_source found, unless the gates hold it back.
    return replace(source, version=promotion.version), promotion


def deployment_of(indexes: Mapping[str, Any], namespace: str, name: str) -> Mapping[str, Any] | None:
    """The Deployment of the ModelDeployment `name`, as the watch last saw it (whoever made it)."""
    return cache.one(indexes, cache.SERVING_DEPLOYMENTS, (namespace, build.deployment_name(name)))


def served_model(parent: Mapping[str, Any], deployment: Mapping[str, Any] | None) -> build.ModelSource | None:
    """The model the ModelDeployment `parent`'s own Deployment serves (its annotations), if it has one."""
    if deployment is None or not controlled_by(deployment, parent["metadata"].get("uid", "")):
        return None
    return build.served_model(deployment)


def read(owner: Owner, spec: ModelDeploymentSpec, parent: Mapping[str, Any], context: Context) -> Inputs:
    deployment = deployment_of(context.indexes, owner.namespace, owner.name)
    source, promotion = _source(spec, parent, deployment, context.indexes)
    pods = cache.every(context.indexes, cache.SERVING_PODS, (owner.namespace, owner.name)) if deployment else []
    return Inputs(source, deployment, pods, promotion)


def children(owner: Owner, spec: ModelDeploymentSpec, inputs: Inputs, config: OperatorConfig) -> Children:
    images = (spec.triton_image or config.triton_image, config.workload_image)
    source = None if isinstance(inputs.source, Waiting) else inputs.source
    # Only its own Deployment's replicas are the operator's to hand over.
    live = inputs.deployment if inputs.deployment and controlled_by(inputs.deployment, owner.uid) else None
    return build.children(owner, spec, source, images, live)


def stale(inputs: Inputs) -> bool:
    """The Deployment is missing (deleted ones come back), or its pods are not built for the version to serve."""
    if isinstance(inputs.source, Waiting):
        return False
    if inputs.deployment is None:
        return True
    annotated = (inputs.deployment["metadata"].get("annotations") or {}).get(MODEL_VERSION_ANNOTATION)
    return bool(annotated != (str(inputs.source.version) if inputs.source.version is not None else None))


def observed(
    current: Mapping[str, Any],
    owner: Owner,
    spec: ModelDeploymentSpec,
    inputs: Inputs,
    applied: Applied,
    *,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    source = inputs.source
    return status.observed(
        current,
        deployment=applied.get("Deployment", build.deployment_name(owner.name), inputs.deployment),
        pods=inputs.pods,
        waiting=source if isinstance(source, Waiting) else None,
        version=None if isinstance(source, Waiting) else source.version,
        promotion=inputs.promotion,
        endpoints=build.endpoints(owner),
        selector=selector(owner.name),
        generation=generation,
        now=now,
    )


RECONCILER: Final = Reconciler(
    kind=MODEL_DEPLOYMENT, read=read, children=children, stale=stale, observed=observed, events=status.events
)
