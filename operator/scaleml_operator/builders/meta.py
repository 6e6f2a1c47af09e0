"""Labels, owner references and security settings every child object shares."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel

from scaleml_api import runtime
from scaleml_api.base import API_VERSION, canonical_quantity
from scaleml_api.v1alpha1.pods import GPU_RESOURCE

MANAGED_BY: Final = "scaleml-operator"
CONFIG_HASH_ANNOTATION: Final = "scaleml.dev/config-hash"
PART_OF: Final = "scaleml"
# What the scratch volume (home, caches, temporary files) of a pod the operator runs its own code in
# may take of the node's disk; the root filesystem is read-only. Past it the kubelet evicts that pod,
# rather than other tenants' pods once the node's disk runs short. A TrainingJob's scratch holds what
# the user's code writes, which no bound of ours can know.
SCRATCH_SIZE: Final = "2Gi"

# Pods meet the "restricted" Pod Security Standard.
POD_SECURITY_CONTEXT: Final = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    # Volumes become group-writable by the pod's user.
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: Final = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class Owner:
    """The ScaleML object that owns a child, at the generation of its spec the children are made for
    (None where no spec is at hand)."""

    kind: str
    name: str
    namespace: str
    uid: str
    generation: int | None = None

    @property
    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class Children:
    """What a reconcile does to the objects around its parent, as a pure builder decides it."""

    # Applied server-side, in this order, and owned by the parent.
    apply: list[dict[str, Any]] = field(default_factory=list)
    # (apiVersion, kind, name) of owned children that must not exist (an HPA when autoscaling is off).
    absent: list[tuple[str, str, str]] = field(default_factory=list)
    # Created once and never updated, nor owned: a retraining TrainingJob outlives its DriftMonitor.
    create: list[dict[str, Any]] = field(default_factory=list)
    # What of the spec cannot reach the live children (a running Job's pod template), to report.
    kept_back: str = ""
    # Fields `apply` no longer sets that must keep their live value, applied first with their live
    # value under kube.HANDOVER_MANAGER, unforced. Server-side apply removes a field its only
    # manager stops applying: a Deployment's replicas would drop to 1 the moment an autoscaler
    # is turned on, until the autoscaler's first sync. One that someone else owns already stays theirs.
    hand_over: list[dict[str, Any]] = field(default_factory=list)


# A container that requests no GPU sees none. An image made for CUDA (PyTorch's, Triton's) sets
# NVIDIA_VISIBLE_DEVICES=all, and on a GPU node the NVIDIA runtime then hands it every GPU, outside
# the scheduler's count: other pods' GPUs, trained on with NCCL or held by Triton's memory pools.
NO_GPUS: Final = {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}


def env(variables: Mapping[str, str]) -> list[dict[str, str]]:
    """A container's env of literal values."""
    return [{"name": name, "value": value} for name, value in variables.items()]


def guaranteed(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    """A container's resources, requests equal to limits (the Guaranteed class): how fast it runs should
    not depend on what its neighbours do. Amounts as the API server writes them back, so that how a
    spec spells them is no change."""
    amounts: dict[str, Any] = {"cpu": canonical_quantity(cpu, scale=-3), "memory": canonical_quantity(memory, scale=-3)}
    if gpus:
        amounts[GPU_RESOURCE] = gpus
    return {"requests": amounts, "limits": dict(amounts)}


def labels(owner: Owner, component: str) -> dict[str, str]:
    """Labels of a child: the recommended app.kubernetes.io set plus the owner, for selection."""
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": owner.name,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
        f"scaleml.dev/{owner.kind.lower()}": owner.name,
    }


def metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner.reference],
    }


def service(owner: Owner, name: str, component: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A Service of the owner's `component` pods on `ports`, with the other fields of its `spec`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, component),
        "spec": {**spec, "selector": labels(owner, component), "ports": ports},
    }


@dataclass(frozen=True)
class RunConfig:
    """A pod's run config as a ConfigMap of its own, and how a container of the pod reads it."""

    name: str
    text: str

    @classmethod
    def of(cls, name: str, run: BaseModel) -> RunConfig:
        return cls(name, run.model_dump_json(by_alias=True))

    def config_map(self, owner: Owner, component: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(owner, self.name, component),
            "data": {runtime.CONFIG_FILE: self.text},
        }

    @property
    def digest(self) -> str:
        """For the pod template's annotations: a new config is a new template, so a Deployment rolls."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @property
    def arguments(self) -> list[str]:
        return ["--config", f"{runtime.CONFIG_DIR}/{runtime.CONFIG_FILE}"]

    @property
    def volume(self) -> dict[str, Any]:
        return {"name": "run-config", "configMap": {"name": self.name}}

    @property
    def mount(self) -> dict[str, Any]:
        return {"name": "run-config", "mountPath": runtime.CONFIG_DIR, "readOnly": True}


def identity(owner: Owner, name: str, component: str, cluster_role: str) -> list[dict[str, Any]]:
    """A pod's identity, in the order to apply it: the ServiceAccount `name`, and the RoleBinding that
    gives it `cluster_role` in the owner's namespace.

    The ClusterRole is one of the few installed with the operator (rbac.yaml), which the operator may
    bind by name and nothing else: a per-object Role would cost the API server an escalation check on
    every write (about 75 ms each, as much as the rest of a TrainingJob's children together), and
    binding a named ClusterRole costs one RBAC lookup. The ClusterRole grants the status of every
    object of the kind in the namespace; the admission policy `scaleml-pods` narrows each write to
    the one object whose pods run as the ServiceAccount.
    """
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(owner, name, component)},
        role_binding(owner, name, component, cluster_role),
    ]


def role_binding(owner: Owner, name: str, component: str, cluster_role: str) -> dict[str, Any]:
    """Binds the ClusterRole `cluster_role` to the ServiceAccount `name`, in the owner's namespace.

    Named apart from the ServiceAccount: a RoleBinding's roleRef cannot change, and earlier versions
    bound a Role of the ServiceAccount's name under that name (left to go with their owner).
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(owner, f"{name}-status", component),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }
