"""Labels, owner references and security settings every child object shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from scaleml_workloads.contract.base import API_VERSION

MANAGED_BY: Final = "scaleml-operator"
PART_OF: Final = "scaleml"

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
    """The ScaleML object that owns a child."""

    kind: str
    name: str
    namespace: str
    uid: str

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
