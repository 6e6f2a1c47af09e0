"""PersistentVolumes made for one claim each and bound to it ahead of time: no provisioner runs in the suite."""

from __future__ import annotations

from typing import Any


def volume_name(namespace: str, claim: str) -> str:
    """The volume of `claim` in `namespace` (cluster-scoped, so named after both)."""
    return f"{namespace}-{claim}"[:63]


def bound_claim(namespace: str, claim: str, source: dict[str, Any], **volume_spec: Any) -> list[dict[str, Any]]:
    """A PersistentVolume of `source` (`{"hostPath": ...}`, `{"local": ...}`) reserved for the claim, and the claim.

    `volume_spec` adds to the volume's spec (a `nodeAffinity`, which a `local` volume needs). Both are
    ReadWriteMany with no storage class, as the examples' claims ask.
    """
    volume = volume_name(namespace, claim)
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                **source,
                "claimRef": {"namespace": namespace, "name": claim},
                **volume_spec,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]


def on_node(node: str) -> dict[str, Any]:
    """The nodeAffinity of a `local` volume on `node`."""
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
    return {"required": {"nodeSelectorTerms": [term]}}
