"""The kinds under load: a small valid object of each, its plain equivalent, and what "converged" means.

The plain equivalent of an object is what the operator would apply for it, rendered by the
operator's own pure builders with a made-up owner, minus the ownerReferences (no parent exists, and
the garbage collector would delete children whose owner is missing). An object has converged once
the operator has judged its current generation (`status.observedGeneration`) and its main child
exists: the Job of a TrainingJob, the Deployment of a ModelDeployment.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import Any, Final

from scaleml_api.base import API_VERSION
from scaleml_api.kind import Kind
from scaleml_api.v1alpha1 import MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_api.validation import parse_spec
from scaleml_operator.builders import modeldeployment, trainingjob
from scaleml_operator.builders.meta import Owner
from scaleml_operator.config import OperatorConfig

# What the operator runs with when started without image flags, as the bench starts it.
CONFIG: Final = OperatorConfig()

# One CPU worker, no GPU, no checkpoints, and no TTL (a finished Job's TrainingJob would be deleted):
# KWOK runs its pod to completion at once, so each object goes through its whole life.
TRAINING_SPEC: Final = {
    "model": {"architecture": "mlp", "params": {"hiddenSizes": [16]}},
    "data": {"volumeClaim": "datasets", "source": "bench/train.parquet", "target": "label"},
    "resources": {"workers": 1, "cpu": "100m", "memory": "256Mi"},
    "output": {"volumeClaim": "models", "modelName": "bench"},
}
# A repository given directly and a pinned version: the Deployment is made on the first reconcile,
# with no TrainingJob to wait for. One replica, no autoscaler, no capture.
SERVING_SPEC: Final = {
    "model": {"repository": {"volumeClaim": "models", "modelName": "bench"}, "version": 1},
    "resources": {"cpu": "250m", "memory": "512Mi"},
    "replicas": 1,
}


def _training_children(owner: Owner) -> list[dict[str, Any]]:
    spec: TrainingJobSpec = parse_spec(TRAINING_JOB, TRAINING_SPEC)
    return trainingjob.children(owner, spec, spec.image or CONFIG.workload_image).apply


def _serving_children(owner: Owner) -> list[dict[str, Any]]:
    spec: ModelDeploymentSpec = parse_spec(MODEL_DEPLOYMENT, SERVING_SPEC)
    source = modeldeployment.resolve_source(spec, None, None)
    if not isinstance(source, modeldeployment.ModelSource):
        raise AssertionError(f"the bench's ModelDeployment must name its model directly, not wait: {source}")
    images = (spec.triton_image or CONFIG.triton_image, CONFIG.workload_image)
    return modeldeployment.children(owner, spec, source, images).apply


@dataclass(frozen=True)
class Workload:
    """One kind under load: the spec of its objects, how their plain children are rendered, and their main child."""

    kind: Kind[Any, Any]
    spec: Mapping[str, Any]
    render: Callable[[Owner], list[dict[str, Any]]]
    # The child whose existence (with the status) means converged, and its name for an object's.
    child_api_version: str
    child_plural: str
    child_name: Callable[[str], str]

    @property
    def key(self) -> str:
        """The kind's plural, as the report and the JSON name it."""
        return self.kind.plural

    def manifest(self, name: str, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind.kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": dict(self.spec),
        }

    def plain_children(self, name: str, namespace: str) -> list[dict[str, Any]]:
        """What the operator applies for the object `name`, to create directly, in the operator's order."""
        children = self.render(Owner(self.kind.kind, name, namespace, str(uuid.uuid4())))
        for child in children:
            child["metadata"].pop("ownerReferences", None)
        return children

    def converged(self, item: Mapping[str, Any], children: Set[str]) -> bool:
        meta, status = item["metadata"], item.get("status") or {}
        return status.get("observedGeneration") == meta.get("generation") and self.child_name(meta["name"]) in children


class Convergence:
    """When each object first converged, from the events of two watches: the objects, and their main children.

    `on_object` and `on_child` are called from the watches' threads.
    """

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        #: Object name -> time.time() when its converged state first arrived.
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, Any]] = {}
        self._children: set[str] = set()
        self._owners: dict[str, str] = {}

    def on_object(self, event: str, item: dict[str, Any]) -> None:
        name = item["metadata"]["name"]
        with self._lock:
            if event == "DELETED":
                self._objects.pop(name, None)
                return
            self._objects[name] = item
            self._owners[self.workload.child_name(name)] = name
            self._check(name)

    def on_child(self, event: str, item: dict[str, Any]) -> None:
        name = item["metadata"]["name"]
        with self._lock:
            if event == "DELETED":
                self._children.discard(name)
                return
            self._children.add(name)
            if name in self._owners:
                self._check(self._owners[name])

    def _check(self, name: str) -> None:
        item = self._objects.get(name)
        if name not in self.seen and item is not None and self.workload.converged(item, self._children):
            self.seen[name] = time.time()

    def count(self) -> int:
        with self._lock:
            return len(self.seen)


TRAINING_JOBS: Final = Workload(TRAINING_JOB, TRAINING_SPEC, _training_children, "batch/v1", "jobs", lambda name: name)
MODEL_DEPLOYMENTS: Final = Workload(
    MODEL_DEPLOYMENT, SERVING_SPEC, _serving_children, "apps/v1", "deployments", modeldeployment.deployment_name
)
WORKLOADS: Final = {workload.key: workload for workload in (TRAINING_JOBS, MODEL_DEPLOYMENTS)}
