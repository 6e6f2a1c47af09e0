"""A child the real API server refuses is reported, and the children after it are still applied.

Only the API tier runs here (no quota controller): what the cluster's admission denies (a quota, a
policy) is shown with the operator at work in tests/e2e/test_refused_children.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from scaleml_operator.builders.meta import Children, Owner, RunConfig, metadata
from scaleml_operator.reconcile.loop import apply_children
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl

pytestmark = pytest.mark.apiserver


@pytest.fixture(autouse=True)
def _kubeconfig(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))


def _autoscaler(owner: Owner, pods_metric: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, owner.name, "scaleml-triton"),
        "spec": {
            "minReplicas": 1,
            "maxReplicas": 2,
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{owner.name}-triton"},
            "metrics": [{"type": "Pods", "pods": pods_metric}],
        },
    }


def test_a_field_the_childs_schema_does_not_declare_is_reported_and_the_next_child_applied(
    kubectl: Kubectl, namespace: str
) -> None:
    owner = Owner("ModelDeployment", "churn", namespace, str(uuid.uuid4()))
    # A misspelt key inside a free-form part of the spec reaches the HPA: the API server cannot type the
    # apply and answers 500, which no retry can mend.
    metric = {
        "metric": {"name": "queue"},
        "target": {"type": "AverageValue", "averageValue": "1"},
        "targetAverageValue": "1",
    }
    after = RunConfig("churn-after", "{}").config_map(owner, "scaleml-triton")
    done = apply_children(owner, Children(apply=[_autoscaler(owner, metric), after]), True)

    assert len(done.rejected) == 1
    assert done.rejected[0].startswith("HorizontalPodAutoscaler churn: failed to create typed patch object")
    assert ".spec.metrics[0].pods.targetAverageValue: field not declared in schema" in done.rejected[0]
    assert not done.denied
    assert kubectl.find("hpa", "churn", namespace) is None
    assert kubectl.find("configmap", "churn-after", namespace) is not None


def test_an_object_to_create_that_is_refused_is_reported_apart_from_the_spec_s_children(
    kubectl: Kubectl, namespace: str
) -> None:
    # What a kind creates follows from what it observed (a DriftMonitor's retraining job), not from
    # its spec: its refusal is the kind's to report, and says nothing of whether the spec was applied.
    owner = Owner("DriftMonitor", "churn", namespace, str(uuid.uuid4()))
    child = RunConfig("churn-config", "{}").config_map(owner, "scaleml-drift-monitor")
    refused = RunConfig("churn-job", "{}").config_map(owner, "scaleml-drift-monitor")
    refused["data"] = {"not a key!": "x"}

    done = apply_children(owner, Children(apply=[child], create=[refused]), True)

    assert not done.rejected
    assert len(done.not_created) == 1
    assert done.not_created[0].startswith("ConfigMap churn-job: ")
    assert "not a key!" in done.not_created[0]
    assert done.created == []
    assert kubectl.find("configmap", "churn-config", namespace) is not None
