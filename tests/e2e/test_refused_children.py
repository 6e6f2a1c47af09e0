"""A child the API server refuses becomes a condition and an Event, not a crash loop or an endless retry.

A cluster's own admission policy refusing the Job a TrainingJob renders is the realistic case: the
CRD cannot know the policy, so the spec is accepted, and only the Job's creation fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.scenario import condition, status, training_job
from tests.support.kubectl import Kubectl
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e


_POLICY = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: NAME}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules: [{apiGroups: [batch], apiVersions: [v1], operations: [CREATE], resources: [jobs]}]
  validations: [{expression: "false", message: batch Jobs are not allowed here}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: NAME}
spec:
  policyName: NAME
  validationActions: [Deny]
  matchResources: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: NAMESPACE}}}
"""


@pytest.fixture
def jobs_refused(kubectl: Kubectl, ml_namespace: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy that refuses every batch Job in the test's namespace."""
    name = f"no-jobs-{ml_namespace}"[:63]
    kubectl.run("apply", "-f", "-", stdin=_POLICY.replace("NAMESPACE", ml_namespace).replace("NAME", name))
    # The API server loads a new policy a moment later: wait until it refuses a Job (a dry run).
    probe = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "probe"}]}}},
    }

    def refusing() -> bool:
        result = kubectl.apply(probe, "-n", ml_namespace, "--dry-run=server", check=False)
        return "batch Jobs are not allowed here" in result.stderr

    wait_for(refusing, 60, "the admission policy to take effect")
    yield name
    kubectl.run("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, "--ignore-not-found")


def _refused(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    applied = condition(status(kubectl, "trainingjob", "churn", namespace), "SpecApplied")
    return applied if applied.get("reason") == "ChildRejected" else None


def test_a_job_that_admission_refuses_is_reported_once_and_not_retried(
    kubectl: Kubectl, ml_namespace: str, jobs_refused: str
) -> None:
    training_job(kubectl, ml_namespace)
    refused = wait_for(lambda: _refused(kubectl, ml_namespace), 60, "SpecApplied=False ChildRejected")
    assert "Job churn" in refused["message"]
    assert "batch Jobs are not allowed here" in refused["message"]
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
