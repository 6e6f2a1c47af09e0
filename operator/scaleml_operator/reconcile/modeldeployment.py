"""ModelDeployment's part of the loop: it reads the model's newest version, its Deployment and the pods.

Three things move a ModelDeployment besides its own spec: its Deployment and pods (status), and
the TrainingJobs that export its model (a new version rolls the Deployment). A refresh re-applies
the children only when the Deployment is missing or serves a stale version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from scaleml_api.conditions import Waiting
from scaleml_api.v1alpha1 import MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import MODEL_VERSION_ANNOTATION, ModelDeploymentSpec
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import MANAGED_BY, Children, Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile.loop import Applied, Context, Reconciler
from scaleml_operator.status import modeldeployment as status

OWNER_LABEL: Final = "scaleml.dev/modeldeployment"
SERVING_SELECTOR: Final = {"app.kubernetes.io/name": build.COMPONENT, "app.kubernetes.io/managed-by": MANAGED_BY}
# The kopf index of the versions TrainingJobs exported: (namespace, claim, model) -> versions.
EXPORTS_INDEX: Final = "exported_versions"


@dataclass(frozen=True)
class Inputs:
    """Where the model comes from (or why there is none yet), the Deployment as it runs, and its pods."""

    source: build.ModelSource | Waiting
    deployment: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]]


def selector(name: str) -> str:
    return ",".join(f"{key}={value}" for key, value in {**SERVING_SELECTOR, OWNER_LABEL: name}.items())


def _source(spec: ModelDeploymentSpec, namespace: str, indexes: Mapping[str, Any]) -> build.ModelSource | Waiting:
    if spec.model.repository is not None:
        return build.resolve_source(spec, None, None)
    training_job = cache.one(indexes, cache.PARENTS[TRAINING_JOB.kind], (namespace, spec.model.from_training_job))
    exported: Mapping[tuple[str, str, str], Iterable[int]] = indexes[EXPORTS_INDEX]
    newest = None
    if training_job is not None:
        output = training_job["spec"]["output"]
        newest = max(exported.get((namespace, output["volumeClaim"], output["modelName"]), ()), default=None)
    return build.resolve_source(spec, training_job, newest)


def read(owner: Owner, spec: ModelDeploymentSpec, parent: Mapping[str, Any], context: Context) -> Inputs:
    source = _source(spec, owner.namespace, context.indexes)
    deployment = cache.one(
        context.indexes, cache.SERVING_DEPLOYMENTS, (owner.namespace, build.deployment_name(owner.name))
    )
    pods = cache.every(context.indexes, cache.SERVING_PODS, (owner.namespace, owner.name)) if deployment else []
    return Inputs(source, deployment, pods)


def children(owner: Owner, spec: ModelDeploymentSpec, inputs: Inputs, config: OperatorConfig) -> Children:
    images = (spec.triton_image or config.triton_image, config.workload_image)
    return build.children(owner, spec, None if isinstance(inputs.source, Waiting) else inputs.source, images)


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
        endpoints=build.endpoints(owner),
        selector=selector(owner.name),
        generation=generation,
        now=now,
    )


RECONCILER: Final = Reconciler(
    kind=MODEL_DEPLOYMENT, read=read, children=children, stale=stale, observed=observed, events=status.events
)
