"""The install manifests and ScaleML objects in a cluster with controllers, a scheduler and nodes."""

from __future__ import annotations

import json

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.manifests import example
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e


def test_operator_deployment_runs_under_restricted_pod_security(
    cluster: ControlPlane, scaleml_installed: Kubectl
) -> None:
    """The namespace enforces "restricted": pods that break it would never be created."""

    def available() -> bool:
        deployment = scaleml_installed.get("deployment", "scaleml-operator", "scaleml-system")
        return bool(deployment.get("status", {}).get("availableReplicas") == 2)

    wait_for(available, timeout=90, message="both operator replicas available")
    events = scaleml_installed.run(
        "get", "events", "-n", "scaleml-system", "--field-selector", "reason=FailedCreate", "-o", "json"
    )
    assert json.loads(events.stdout)["items"] == []


def test_objects_owned_by_a_scaleml_resource_are_garbage_collected(
    cluster: ControlPlane, scaleml_installed: Kubectl, namespace: str
) -> None:
    scaleml_installed.apply(example("TrainingJob"), "-n", namespace)
    job = scaleml_installed.get("trainingjob", "churn", namespace)
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "churn-child",
            "ownerReferences": [
                {
                    "apiVersion": "scaleml.dev/v1alpha1",
                    "kind": "TrainingJob",
                    "name": "churn",
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"owned": "yes"},
    }
    scaleml_installed.apply(child, "-n", namespace)
    scaleml_installed.run("delete", "trainingjob", "churn", "-n", namespace, "--wait=false")

    def collected() -> bool:
        result = scaleml_installed.run("get", "configmap", "churn-child", "-n", namespace, check=False)
        return "NotFound" in result.stderr

    # The garbage collector learns about new CRD kinds from discovery, which can lag behind.
    wait_for(collected, timeout=90, message="the owned ConfigMap to be garbage-collected")
