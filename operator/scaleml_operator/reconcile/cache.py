"""What the operator's watches hold, as the reconcile reads it: its objects and their children.

kopf keeps these indexes current from the watch streams it runs anyway, and fills them before any
handler runs, so a read here costs no request: it is what the API server said last. A stale read
cannot do harm: every status write is conditional on the resourceVersion it was composed from,
and every child is applied whole. The handlers module `handlers.cache` declares the indexes; the
ids and keys are defined here, next to the reads, so that both agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from scaleml_api.v1alpha1 import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import MODEL_ANNOTATION, MODEL_VERSION_ANNOTATION, PROMOTE_ANNOTATION
from scaleml_api.v1alpha1.pods import GPU_RESOURCE
from scaleml_operator.builders.driftmonitor import REFERENCE_ANNOTATION
from scaleml_operator.builders.retraining import DRIFT_SINCE_ANNOTATION, RETRAIN_RULE_ANNOTATION
from scaleml_operator.builders.trainingjob import SPEC_GENERATION, TEMPLATE_HASH
from scaleml_operator.status.pods import TEMPLATE_HASH_LABEL
from scaleml_operator.status.trainingjob import COMPLETION_INDEX

Object = Mapping[str, Any]
# (namespace, name) of an object, (namespace, owner's name) of the pods of one owner, or (namespace,
# monitor's name) of the TrainingJobs a DriftMonitor made.
Key = tuple[str, str]

# The operator's own objects by kind, and the children it watches, by the index ids kopf knows them by.
PARENTS: Final = {kind.kind: f"{kind.plural}_by_name" for kind in (TRAINING_JOB, MODEL_DEPLOYMENT, DRIFT_MONITOR)}
JOBS: Final = "jobs_by_name"
SERVING_DEPLOYMENTS: Final = "serving_deployments_by_name"
MONITOR_DEPLOYMENTS: Final = "monitor_deployments_by_name"
TRAINING_PODS: Final = "training_pods_by_owner"
SERVING_PODS: Final = "serving_pods_by_owner"
# (namespace, DriftMonitor) -> the names of the retraining TrainingJobs labelled as that monitor's.
RETRAININGS: Final = "retrainings_by_monitor"

# The annotations the reads use, of whichever object the caches hold it on. Every other one is left
# out: kubectl's and kopf's copies of the whole object (last-applied-configuration, and kopf's
# last-handled-configuration on objects that earlier releases handled), which can be most of its
# size, and whatever else anyone wrote there, up to 256 KiB an object. A tenant who may create pods
# can give them the labels the operator's pod watch selects, so that these caches would otherwise
# hold as much of the tenant's as the tenant likes.
READ_ANNOTATIONS: Final = frozenset(
    {
        PROMOTE_ANNOTATION,  # ModelDeployment: serve a held-back version (status.promotion)
        DRIFT_SINCE_ANNOTATION,  # retraining TrainingJob: the drift episode it records (builders.retraining)
        RETRAIN_RULE_ANNOTATION,  # retraining TrainingJob: what persisted (builders.retraining)
        TEMPLATE_HASH,  # training Job: the pod template it runs (builders.trainingjob)
        SPEC_GENERATION,  # training Job: the spec it was made from (builders.trainingjob)
        COMPLETION_INDEX,  # training pod: the worker it runs, as the Job controller numbers them (status.trainingjob)
        MODEL_ANNOTATION,  # serving Deployment: the model it serves (builders.modeldeployment)
        MODEL_VERSION_ANNOTATION,  # serving Deployment: the version it serves (status.modeldeployment)
        REFERENCE_ANNOTATION,  # monitor Deployment: the reference profile it reads (reconcile.driftmonitor)
    }
)


# The labels the reads use of a child (a Job, a Deployment, a pod); the indexes take their keys from
# the event's labels before the projection. The selector labels that bring a child into a watch are
# on every object of it, and whoever may create pods may add as many more as the API server allows.
READ_LABELS: Final = frozenset({TEMPLATE_HASH_LABEL})  # serving pod: its ReplicaSet (status.pods)
# Of each container list of a pod, the first ones: the operator's pods have at most three. A pod may
# list thousands, and a tenant's pod that carries the selector labels is cached too.
MAX_CONTAINERS: Final = 8
_CONTAINER_STATUSES: Final = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")
# The limits the reads use of a container: its memory (an OOM kill's message) and GPUs (GPU hours).
READ_LIMITS: Final = frozenset({"memory", GPU_RESOURCE})


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the reads need it: without managedFields and the annotations no read uses, which
    can be most of its size, so that a thousand of them stay small in memory. It keeps its labels:
    reads use a parent's own (a retraining job's lineage), and they count in its size the API server
    bounds."""
    return {**body, "metadata": _slim_metadata(body, child=False)}


def _slim_metadata(body: Mapping[str, Any], *, child: bool) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    annotations = {key: value for key, value in (meta.get("annotations") or {}).items() if key in READ_ANNOTATIONS}
    slimmed = {key: value for key, value in meta.items() if key not in ("managedFields", "annotations")}
    if annotations:
        slimmed["annotations"] = annotations
    if child:
        labels = {key: value for key, value in (meta.get("labels") or {}).items() if key in READ_LABELS}
        slimmed.pop("labels", None)
        if labels:
            slimmed["labels"] = labels
        # Whose the child is: its controller, the one reference that counts (reconcile.loop.controlled_by).
        controllers = [ref for ref in meta.get("ownerReferences") or () if ref.get("controller")][:1]
        slimmed.pop("ownerReferences", None)
        if controllers:
            slimmed["ownerReferences"] = controllers
    return slimmed


# The caches of children keep only what the reads use, as client-go's informer transforms do. A
# child's pod template (and a pod's spec) is most of its size: with the Job and pod of each of 1,000
# TrainingJobs cached whole, the operator's live Python objects took 98 KB per TrainingJob; 51 KB so.


def without_template(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Job or Deployment as the reads need it: slim, and its spec without the pod template.

    Its template hash annotation says which template it runs; a run that must copy the template
    itself reads the object whole (reconcile.trainingjob).
    """
    spec = {key: value for key, value in (body.get("spec") or {}).items() if key != "template"}
    return {**body, "metadata": _slim_metadata(body, child=True), "spec": spec}


def pod_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """A pod as the reads need it: slim metadata, its (init) containers' names and limits, and its status."""
    spec, status = body.get("spec") or {}, body.get("status") or {}

    def containers(key: str) -> list[dict[str, Any]]:
        kept = []
        for container in (spec.get(key) or ())[:MAX_CONTAINERS]:
            limits = (container.get("resources") or {}).get("limits") or {}
            read = {name: amount for name, amount in limits.items() if name in READ_LIMITS}
            kept.append({"name": container.get("name"), "resources": {"limits": read}})
        return kept

    bounded = {key: (status.get(key) or [])[:MAX_CONTAINERS] for key in _CONTAINER_STATUSES if key in status}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": _slim_metadata(body, child=True),
        "spec": {"initContainers": containers("initContainers"), "containers": containers("containers")},
        "status": {**status, **bounded},
    }


def one(indexes: Mapping[str, Any], index: str, key: Key) -> Object | None:
    """The object of `key` in `index`, or None. A name is unique in its namespace, so there is at most one."""
    for found in indexes[index].get(key, ()):
        return found  # type: ignore[no-any-return]
    return None


def every(indexes: Mapping[str, Any], index: str, key: Key) -> list[Any]:
    """The values of `key` in `index` (the pods of one owner, the names of a monitor's TrainingJobs)."""
    return list(indexes[index].get(key, ()))


def in_namespace(indexes: Mapping[str, Any], index: str, namespace: str) -> Iterable[Object]:
    """Every object of `index` in `namespace` (for reads that are rare, such as listing TrainingJobs)."""
    for (space, _), found in list(indexes[index].items()):
        if space == namespace:
            yield from found
