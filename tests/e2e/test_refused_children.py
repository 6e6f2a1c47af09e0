"""A child the API server refuses becomes a condition and an Event, not a crash loop or an endless retry.

A cluster's own admission policy refusing a child is the realistic case: the CRD cannot know the
policy, so the spec is accepted, and only the child's creation fails: a TrainingJob's Job, or the
autoscaler of a ModelDeployment, which then serves without it and is not Ready.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.scenario import condition, export, model_deployment, status, training_job
from tests.support.kubectl import Kubectl
from tests.support.policies import refusal
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

JOBS_REFUSED = "batch Jobs are not allowed here"


def _refusing(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    rule: dict[str, Any],
    expression: str,
    message: str,
    probe: dict[str, Any],
) -> Iterator[None]:
    """A ValidatingAdmissionPolicy that refuses, in `namespace`, the objects of `rule` for which `expression` fails.

    `probe` is one it refuses: the API server loads a new policy a moment later, so this waits until
    a dry run of the probe is refused.
    """
    policy, binding = refusal(name, namespace, {**rule, "operations": ["CREATE", "UPDATE"]}, expression, message)
    kubectl.apply(policy)
    kubectl.apply(binding)

    def refusing() -> bool:
        result = kubectl.apply(probe, "-n", namespace, "--dry-run=server", check=False)
        return message in result.stderr

    wait_for(refusing, 60, "the admission policy to take effect")
    yield
    kubectl.run("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found")


@pytest.fixture
def jobs_refused(kubectl: Kubectl, ml_namespace: str) -> Iterator[None]:
    """Every batch Job in the test's namespace refused."""
    probe = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "probe"}]}}},
    }
    rule = {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs"]}
    yield from _refusing(kubectl, ml_namespace, f"no-jobs-{ml_namespace}"[:63], rule, "false", JOBS_REFUSED, probe)


# A metric the cluster's metrics adapter does not serve, which its policy keeps out of autoscalers.
QUEUE = {
    "type": "Pods",
    "pods": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "10"}},
}
QUEUE_REFUSED = "the metric queue is not served in this cluster"


@pytest.fixture
def queue_metric_refused(kubectl: Kubectl, ml_namespace: str) -> Iterator[None]:
    """Every HorizontalPodAutoscaler in the test's namespace that scales on the Pods metric "queue" refused."""
    probe = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "probe"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "probe"},
            "maxReplicas": 2,
            "metrics": [QUEUE],
        },
    }
    rule = {"apiGroups": ["autoscaling"], "apiVersions": ["v2"], "resources": ["horizontalpodautoscalers"]}
    expression = (
        "!has(object.spec.metrics) || !object.spec.metrics.exists(m, m.type == 'Pods' && m.pods.metric.name == 'queue')"
    )
    yield from _refusing(kubectl, ml_namespace, f"no-queue-{ml_namespace}"[:63], rule, expression, QUEUE_REFUSED, probe)


def _refused(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    applied = condition(status(kubectl, "trainingjob", "churn", namespace), "SpecApplied")
    return applied if applied.get("reason") == "ChildRejected" else None


def test_a_job_that_admission_refuses_is_reported_once_and_not_retried(
    kubectl: Kubectl, ml_namespace: str, jobs_refused: None
) -> None:
    training_job(kubectl, ml_namespace)
    refused = wait_for(lambda: _refused(kubectl, ml_namespace), 60, "SpecApplied=False ChildRejected")
    assert "Job churn" in refused["message"]
    assert JOBS_REFUSED in refused["message"]
    kubectl.await_event_reasons(ml_namespace, "TrainingJob", {"SpecNotApplied"})
    assert kubectl.find("job", "churn", ml_namespace) is None
    # The children before it were applied, and the status says what the object is waiting for.
    assert kubectl.find("serviceaccount", "churn-trainer", ml_namespace) is not None
    assert status(kubectl, "trainingjob", "churn", ml_namespace)["phase"] == "Pending"
    # No retry loop: the handler finished (kopf keeps a failed, to-be-retried handler's state in
    # the object's annotations), and one Warning said what is wrong.
    annotations = kubectl.get("trainingjob", "churn", ml_namespace)["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("scaleml.dev/reconcile")], annotations
    events = kubectl.run(
        "get", "events", "-n", ml_namespace, "--field-selector", "reason=SpecNotApplied", "-o", "name"
    ).stdout.split()
    assert len(events) == 1


def _model_deployment(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return status(kubectl, "modeldeployment", "churn", namespace)


def test_an_autoscaler_the_api_server_refuses_leaves_the_model_deployment_serving_but_not_ready(
    kubectl: Kubectl, ml_namespace: str, queue_metric_refused: None
) -> None:
    training_job(kubectl, ml_namespace)
    export(kubectl, ml_namespace, 1)
    autoscaling = {"minReplicas": 2, "maxReplicas": 3, "metrics": [QUEUE]}
    kubectl.apply(model_deployment(autoscaling=autoscaling), "-n", ml_namespace)

    def degraded() -> dict[str, Any] | None:
        current = _model_deployment(kubectl, ml_namespace)
        return current if current.get("phase") == "Degraded" and current.get("readyReplicas") else None

    # The Deployment serves, at the one replica it defaults to without the autoscaler that would own it.
    served = wait_for(degraded, 90, "the ModelDeployment to serve without its autoscaler")
    assert served["readyReplicas"] == 1
    applied = condition(served, "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", "ChildRejected")
    assert applied["message"].startswith("HorizontalPodAutoscaler churn:"), applied["message"]
    for type_ in ("Ready", "Degraded"):
        said = condition(served, type_)
        assert said["reason"] == "SpecNotApplied", said
        assert QUEUE_REFUSED in said["message"], said
    assert condition(served, "Ready")["status"] == "False"
    assert kubectl.find("hpa", "churn", ml_namespace) is None
    assert kubectl.find("pdb", "churn", ml_namespace) is not None
    # Told once, by the Warning of the SpecApplied condition, not again for the phase.
    kubectl.await_event_reasons(ml_namespace, "ModelDeployment", {"SpecNotApplied"})
    warnings = kubectl.run(
        "get",
        "events",
        "-n",
        ml_namespace,
        "--field-selector",
        "type=Warning,involvedObject.kind=ModelDeployment",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert warnings == ["SpecNotApplied"], warnings

    # A metric the cluster serves: the autoscaler is made, and takes the replicas to its minimum.
    cpu_only = json.dumps({"spec": {"autoscaling": {"metrics": []}}})
    kubectl.run("patch", "md", "churn", "-n", ml_namespace, "--type=merge", "-p", cpu_only)

    def ready() -> dict[str, Any] | None:
        current = _model_deployment(kubectl, ml_namespace)
        return current if current.get("phase") == "Ready" and current.get("readyReplicas") == 2 else None

    fixed = wait_for(ready, 90, "the ModelDeployment to be Ready with its autoscaler")
    assert condition(fixed, "Ready")["status"] == "True"
    assert condition(fixed, "SpecApplied")["status"] == "True"
    assert kubectl.find("hpa", "churn", ml_namespace) is not None
