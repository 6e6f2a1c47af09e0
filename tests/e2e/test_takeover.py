"""No takeover: objects named like ScaleML's children but owned by someone else are never adopted or changed.

A tenant who names a ModelDeployment or a TrainingJob after another team's Service, Deployment,
ServiceAccount or Role must not get the operator to rewrite it, adopt it, or garbage-collect it
when the ScaleML object is deleted.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from tests.e2e.scenario import condition, export, model_deployment, status, training_job
from tests.support.kubectl import Kubectl
from tests.support.manifests import merged
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

_OTHER_TEAM = {"app.kubernetes.io/name": "billing", "team": "billing"}


def _foreign_objects() -> list[dict[str, Any]]:
    """Another team's objects, named as children of TrainingJobs and ModelDeployments "churn" and "fraud" would be."""
    meta = {"labels": _OTHER_TEAM}
    container = {
        "name": "app",
        "image": "billing:1",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return [
        # The first child of ModelDeployment "fraud": nothing of it is applied.
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "fraud", **meta},
            "spec": {"selector": _OTHER_TEAM, "ports": [{"name": "web", "port": 80}]},
        },
        # ModelDeployment "churn"'s Deployment: its Service (before it) is applied, nothing after.
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "churn-triton", **meta},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": _OTHER_TEAM},
                "template": {"metadata": {"labels": _OTHER_TEAM}, "spec": {"containers": [container]}},
            },
        },
        # TrainingJob "fraud"'s ServiceAccount: its pods would run as the other team.
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "fraud-trainer", **meta}},
        # TrainingJob "churn"'s RoleBinding: pods after it would run with the other team's grants.
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "churn-trainer-status", **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "churn-trainer"}],
        },
    ]


def _snapshot(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    found = {}
    for manifest in _foreign_objects():
        live = kubectl.find(manifest["kind"].lower(), manifest["metadata"]["name"], namespace)
        assert live is not None, manifest["metadata"]["name"]
        found[f"{manifest['kind']} {manifest['metadata']['name']}"] = live
    return found


def _gone(kubectl: Kubectl, kind: str, name: str, namespace: str) -> bool:
    return kubectl.find(kind, name, namespace) is None


def _refused(kubectl: Kubectl, resource: str, name: str, namespace: str) -> dict[str, Any] | None:
    applied = condition(status(kubectl, resource, name, namespace), "SpecApplied")
    return applied if applied.get("reason") == "ResourceExists" else None


@pytest.mark.parametrize(
    ("resource", "name", "foreign"),
    [
        ("modeldeployment", "fraud", "Service fraud"),
        ("modeldeployment", "churn", "Deployment churn-triton"),
        ("trainingjob", "fraud", "ServiceAccount fraud-trainer"),
        ("trainingjob", "churn", "RoleBinding churn-trainer-status"),
    ],
)
def test_a_foreign_object_of_a_childs_name_is_reported_and_left_untouched(
    resource: str, name: str, foreign: str, kubectl: Kubectl, ml_namespace: str
) -> None:
    for manifest in _foreign_objects():
        kubectl.apply(manifest, "-n", ml_namespace)
    before = _snapshot(kubectl, ml_namespace)

    if resource == "trainingjob":
        training_job(kubectl, ml_namespace, name)
    else:
        # A TrainingJob of a free name exports the model the ModelDeployment serves.
        training_job(kubectl, ml_namespace, "model")
        export(kubectl, ml_namespace, 1, job="model")
        serving = merged(model_deployment(model={"fromTrainingJob": "model"}), {"metadata": {"name": name}})
        kubectl.apply(serving, "-n", ml_namespace)

    refused = wait_for(lambda: _refused(kubectl, resource, name, ml_namespace), 90, f"ResourceExists on {name}")
    assert refused["message"].startswith(foreign), refused["message"]
    kind = "ModelDeployment" if resource == "modeldeployment" else "TrainingJob"
    kubectl.await_event_reasons(ml_namespace, kind, {"ResourceExists"})
    # What depends on the foreign object is not created: no Job, no Triton Deployment of ours.
    assert kubectl.find("job", name, ml_namespace) is None

    # Byte for byte: not one write reached the other team's objects (resourceVersion moves with any).
    after = _snapshot(kubectl, ml_namespace)
    for key, live in after.items():
        assert live["metadata"]["resourceVersion"] == before[key]["metadata"]["resourceVersion"], key
        assert "ownerReferences" not in live["metadata"], key

    # The children that were free are ours: deleting the object garbage-collects them, and only them.
    owned = [
        (kind, child)
        for kind, child in (("service", "churn"), ("serviceaccount", "churn-trainer"))
        if (kubectl.find(kind, child, ml_namespace) or {}).get("metadata", {}).get("ownerReferences")
    ]
    kubectl.run("delete", resource, name, "-n", ml_namespace)
    for kind, child in owned:
        wait_for(partial(_gone, kubectl, kind, child, ml_namespace), 90, f"{child} to go")
    assert _snapshot(kubectl, ml_namespace).keys() == before.keys()
