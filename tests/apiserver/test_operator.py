"""The operator, run in-process with kopf's KopfRunner, against the real API server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kopf.testing import KopfRunner

from scaleml_api.v1alpha1 import KINDS
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for

pytestmark = pytest.mark.apiserver

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@pytest.fixture
def operator(control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[KopfRunner]:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    args = ["run", "--standalone", "--namespace", namespace, "-m", "scaleml_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output
    assert runner.exception is None


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def _accepted_at(
    kubectl: Kubectl, resource: str, namespace: str, generation: int, status: str
) -> dict[str, Any] | None:
    obj = kubectl.get(resource, "churn", namespace)
    condition = _condition(obj, "Accepted")
    if obj.get("status", {}).get("observedGeneration") == generation and condition and condition["status"] == status:
        return obj
    return None


@pytest.mark.parametrize("kind", [k.kind for k in KINDS])
def test_new_object_gets_observed_generation_and_accepted_condition(
    kind: str, operator: KopfRunner, scaleml_installed: Kubectl, namespace: str
) -> None:
    scaleml_installed.apply(example(kind), "-n", namespace)
    obj = wait_for(
        lambda: _accepted_at(scaleml_installed, kind.lower(), namespace, 1, "True"),
        timeout=30,
        message=f"{kind} accepted",
    )
    condition = _condition(obj, "Accepted")
    assert condition is not None
    assert condition["reason"] == "SpecAccepted"
    assert condition["observedGeneration"] == 1
    # Valid from the start: the condition says so, and no SpecAccepted Event repeats it.
    assert scaleml_installed.event_reasons(namespace, kind) == set()

    # The generation handled is status.observedGeneration: the operator writes nothing else to the
    # object, neither bookkeeping annotations nor a finalizer, and touches only its status subresource.
    shown = scaleml_installed.run("get", kind.lower(), "churn", "-n", namespace, "-o", "json", "--show-managed-fields")
    settled = json.loads(shown.stdout)
    assert not settled["metadata"].get("annotations", {}).keys() - {LAST_APPLIED}
    assert not settled["metadata"].get("finalizers")
    writers = {(entry["manager"], entry.get("subresource", "")) for entry in settled["metadata"]["managedFields"]}
    assert {writer for writer in writers if writer[1] != "status"} == {("kubectl-client-side-apply", "")}
    assert ("scaleml-operator", "status") in writers


def test_spec_that_fails_deeper_validation_is_reported_not_retried(
    operator: KopfRunner, scaleml_installed: Kubectl, namespace: str
) -> None:
    job = example("TrainingJob")
    job["spec"]["model"]["params"] = {"hiddenSizes": [64, "wide"]}
    scaleml_installed.apply(job, "-n", namespace)

    obj = wait_for(
        lambda: _accepted_at(scaleml_installed, "trainingjob", namespace, 1, "False"),
        timeout=30,
        message="InvalidSpec condition",
    )
    accepted = _condition(obj, "Accepted")
    ready = _condition(obj, "Ready")
    assert accepted is not None
    assert ready is not None
    assert accepted["reason"] == "InvalidSpec"
    assert "spec.model.params.hiddenSizes[1]" in accepted["message"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    warning = scaleml_installed.run(
        "get", "events", "-n", namespace, "--field-selector", "reason=InvalidSpec", "-o", "jsonpath={.items[*].message}"
    )
    assert "hiddenSizes" in warning.stdout

    # The fix is picked up as an update: accepted at the new generation.
    fixed = merged(job, {"spec": {"model": {"params": {"hiddenSizes": [64, 32]}}}})
    scaleml_installed.apply(fixed, "-n", namespace)
    wait_for(
        lambda: _accepted_at(scaleml_installed, "trainingjob", namespace, 2, "True"),
        timeout=30,
        message="accepted after the fix",
    )
    # The fix is news, unlike a spec valid from the start: it gets its Event.
    scaleml_installed.await_event_reasons(namespace, "TrainingJob", {"SpecAccepted"}, 30)
