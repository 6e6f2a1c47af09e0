"""TrainingJob on a cluster with controllers, a scheduler and KWOK nodes, the operator as its ServiceAccount."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest

from scaleml_api.runtime import EXIT_INTERRUPTED
from tests.support.access import can
from tests.support.controlplane import DISRUPTION_ANNOTATION, EXIT_CODE_ANNOTATION, EXIT_REASON_ANNOTATION
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

# A node label that no node has until a test gives it one: pods that need it wait, unscheduled.
HOLD_LABEL = "scaleml.dev/e2e-hold"


def _training_job(**changes: Any) -> dict[str, Any]:
    # The fake nodes carry no GPU-pool label: drop the example's node selector.
    job = merged(example("TrainingJob"), {"spec": {"scheduling": {"nodeSelector": None}}})
    return merged(job, {"spec": changes})


def _patch_spec(kubectl: Kubectl, namespace: str, changes: dict[str, Any]) -> None:
    patch = json.dumps({"spec": changes})
    kubectl.run("patch", "trainingjob", "churn", "-n", namespace, "--type=merge", "-p", patch)


def _phase(kubectl: Kubectl, namespace: str, phase: str) -> dict[str, Any] | None:
    job = kubectl.find("trainingjob", "churn", namespace)
    return job if job and job.get("status", {}).get("phase") == phase else None


def _job_template(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    job = kubectl.find("job", "churn", namespace)
    assert job is not None
    return job["spec"]["template"]  # type: ignore[no-any-return]


def _condition(job: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in job["status"]["conditions"] if c["type"] == type_)


def test_training_job_gets_its_children_and_succeeds(kubectl: Kubectl, ml_namespace: str) -> None:
    kubectl.apply(_training_job(), "-n", ml_namespace)
    done = wait_for(lambda: _phase(kubectl, ml_namespace, "Succeeded"), 90, "the TrainingJob to succeed")
    assert _condition(done, "Succeeded")["status"] == "True"
    assert _condition(done, "Created")["status"] == "True"
    assert done["status"]["startTime"]
    assert done["status"]["completionTime"]
    assert done["status"]["restarts"] == 0
    # One GPU per pod, two pods, for however long KWOK kept them running.
    assert done["status"]["gpuHours"] >= 0

    service = kubectl.find("service", "churn-workers", ml_namespace)
    assert service is not None
    assert service["spec"]["clusterIP"] == "None"
    assert kubectl.find("serviceaccount", "churn-trainer", ml_namespace) is not None
    binding = kubectl.find("rolebinding", "churn-trainer-status", ml_namespace)
    assert binding is not None
    assert binding["roleRef"]["name"] == "scaleml-trainer-status"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "churn-trainer", "namespace": ml_namespace}]
    job = kubectl.find("job", "churn", ml_namespace)
    assert job is not None
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["status"]["succeeded"] == 2

    reasons = kubectl.await_event_reasons(ml_namespace, "TrainingJob", {"TrainingStarted", "TrainingSucceeded"})
    # Valid from the start: the Accepted condition says so, no Event.
    assert "SpecAccepted" not in reasons

    # The pods' ServiceAccount may patch this TrainingJob's status (and, as test_tenancy.py shows, no other's).
    workers = f"system:serviceaccount:{ml_namespace}:churn-trainer"
    assert can(kubectl, workers, "patch", "trainingjobs.scaleml.dev", "status", ml_namespace, "churn")


def test_failing_workers_restart_then_fail_after_the_backoff_limit(kubectl: Kubectl, ml_namespace: str) -> None:
    spec = _training_job(runPolicy={"backoffLimit": 1}, podMetadata={"annotations": {EXIT_CODE_ANNOTATION: "3"}})
    kubectl.apply(merged(spec, {"spec": {"resources": {"workers": 1}, "elastic": None}}), "-n", ml_namespace)
    failed = wait_for(lambda: _phase(kubectl, ml_namespace, "Failed"), 90, "the TrainingJob to fail")
    # Failed twice: the first failure restarted it, the second failed it.
    assert failed["status"]["restarts"] == 1
    condition = _condition(failed, "Failed")
    assert condition["reason"] == "BackoffLimitExceeded"
    assert "exit code 3" in condition["message"]


def test_an_out_of_memory_worker_counts_and_the_failure_names_it(kubectl: Kubectl, ml_namespace: str) -> None:
    oom = {EXIT_CODE_ANNOTATION: "137", EXIT_REASON_ANNOTATION: "OOMKilled"}
    spec = _training_job(runPolicy={"backoffLimit": 1}, podMetadata={"annotations": oom})
    kubectl.apply(merged(spec, {"spec": {"resources": {"workers": 1}, "elastic": None}}), "-n", ml_namespace)
    failed = wait_for(lambda: _phase(kubectl, ml_namespace, "Failed"), 90, "the TrainingJob to fail")
    # Counted and retried once (backoffLimit 1), like any crash: not ignored as a kill from outside.
    assert failed["status"]["restarts"] == 1
    condition = _condition(failed, "Failed")
    assert condition["reason"] == "BackoffLimitExceeded"
    for said in ("worker 0", "OOMKilled", "exit code 137", "memory limit of 16Gi"):
        assert said in condition["message"], condition
    kubectl.await_event_reasons(ml_namespace, "TrainingJob", {"TrainingFailed"})
    posted = kubectl.run("get", "events", "-n", ml_namespace, "--field-selector", "reason=TrainingFailed", "-o", "json")
    (event,) = json.loads(posted.stdout)["items"]
    assert "OOMKilled" in event["message"], event["message"]


def _pods_by_index(kubectl: Kubectl, namespace: str, count: int) -> dict[int, str] | None:
    """The names of the Job's pods by completion index, once there are `count` of them."""
    listed = kubectl.run("get", "pods", "-n", namespace, "-l", "job-name=churn", "-o", "json").stdout
    pods = {
        int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]): pod["metadata"]["name"]
        for pod in json.loads(listed)["items"]
    }
    return pods if len(pods) == count else None


def _finished(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    return _phase(kubectl, namespace, "Succeeded") or _phase(kubectl, namespace, "Failed")


def test_a_preempted_worker_of_five_restarts_the_group_without_failing_the_job(
    kubectl: Kubectl, ml_namespace: str
) -> None:
    # The pods wait for a node with the hold label, so that each is told how to end before it runs.
    resources = {"workers": 5, "gpusPerWorker": 0, "cpu": "1", "memory": "2Gi"}
    spec = _training_job(resources=resources, elastic=None, scheduling={"nodeSelector": {HOLD_LABEL: ml_namespace}})
    kubectl.apply(spec, "-n", ml_namespace)
    pods = wait_for(lambda: _pods_by_index(kubectl, ml_namespace, 5), 60, "the five worker pods")
    # Worker 1 is preempted: the scheduler marks its pod DisruptionTarget and stops it (exit 143). Its
    # four peers lose their group, and their launchers end them with 75 (interrupted).
    preempted = {EXIT_CODE_ANNOTATION: "143", DISRUPTION_ANNOTATION: "PreemptionByScheduler"}
    for index, name in pods.items():
        outcome = preempted if index == 1 else {EXIT_CODE_ANNOTATION: str(EXIT_INTERRUPTED)}
        kubectl.run("annotate", "pod", name, "-n", ml_namespace, *(f"{key}={value}" for key, value in outcome.items()))
    node = kubectl.run("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    kubectl.run("label", "node", node, f"{HOLD_LABEL}={ml_namespace}")
    try:
        done = wait_for(lambda: _finished(kubectl, ml_namespace), 120, "the TrainingJob to finish")
    finally:
        kubectl.run("label", "node", node, f"{HOLD_LABEL}-")
    # The group restarted once: every worker was replaced, and the replacements finished the run.
    assert done["status"]["phase"] == "Succeeded", done["status"]["conditions"]
    assert done["status"]["restarts"] == 1
    job = kubectl.get("job", "churn", ml_namespace)
    # The four interrupted workers were counted, each against its own limit; the preempted one was not.
    assert job["status"]["failed"] == 4, job["status"]
    assert not job["status"].get("failedIndexes"), job["status"]


def test_invalid_input_exit_code_fails_at_once_without_retries(kubectl: Kubectl, ml_namespace: str) -> None:
    spec = _training_job(runPolicy={"backoffLimit": 5}, podMetadata={"annotations": {EXIT_CODE_ANNOTATION: "2"}})
    kubectl.apply(merged(spec, {"spec": {"resources": {"workers": 1}, "elastic": None}}), "-n", ml_namespace)
    failed = wait_for(lambda: _phase(kubectl, ml_namespace, "Failed"), 90, "the TrainingJob to fail")
    assert failed["status"]["restarts"] == 0
    assert _condition(failed, "Failed")["reason"] == "PodFailurePolicy"


def test_suspend_and_resume(kubectl: Kubectl, ml_namespace: str) -> None:
    kubectl.apply(_training_job(runPolicy={"suspend": True}), "-n", ml_namespace)
    suspended = wait_for(lambda: _phase(kubectl, ml_namespace, "Suspended"), 60, "the TrainingJob to be suspended")
    assert _condition(suspended, "Suspended")["status"] == "True"
    pods = kubectl.run("get", "pods", "-n", ml_namespace, "-o", "name").stdout
    assert pods.strip() == ""
    _patch_spec(kubectl, ml_namespace, {"runPolicy": {"suspend": False}})
    resumed = wait_for(lambda: _phase(kubectl, ml_namespace, "Succeeded"), 90, "the resumed TrainingJob to succeed")
    assert _condition(resumed, "Suspended")["status"] == "False"
    spec_applied = _condition(resumed, "SpecApplied")
    assert spec_applied["status"] == "True", spec_applied["message"]


def test_a_change_the_running_job_cannot_take_is_explained_and_the_rest_reaches_it(
    kubectl: Kubectl, ml_namespace: str
) -> None:
    kubectl.apply(_training_job(runPolicy={"suspend": True}), "-n", ml_namespace)
    wait_for(lambda: _phase(kubectl, ml_namespace, "Suspended"), 60, "the TrainingJob to be suspended")
    template = _job_template(kubectl, ml_namespace)
    # The pods' arguments cannot change once the Job exists; whether it is suspended can.
    _patch_spec(kubectl, ml_namespace, {"hyperparameters": {"epochs": 99}, "runPolicy": {"suspend": False}})

    def explained() -> dict[str, Any] | None:
        job = kubectl.find("trainingjob", "churn", ml_namespace)
        conditions = (job or {}).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "SpecApplied" and c["status"] == "False"), None)

    condition = wait_for(explained, 30, "the SpecApplied condition")
    assert condition["reason"] == "ImmutableWhileRunning"
    assert "spec.template" in condition["message"]
    # The Job was applied with its own template kept, so the rest of the change reached it: it runs.
    done = wait_for(lambda: _phase(kubectl, ml_namespace, "Succeeded"), 90, "the resumed TrainingJob to succeed")
    assert not any(c.get("reason") == "ChildRejected" for c in done["status"]["conditions"])
    assert _job_template(kubectl, ml_namespace) == template


def test_ttl_deletes_the_finished_training_job(kubectl: Kubectl, ml_namespace: str) -> None:
    kubectl.apply(_training_job(runPolicy={"ttlSecondsAfterFinished": 1}), "-n", ml_namespace)
    wait_for(lambda: kubectl.find("trainingjob", "churn", ml_namespace) is None, 120, "the TrainingJob to be deleted")


def test_deleting_the_training_job_removes_every_child(kubectl: Kubectl, ml_namespace: str) -> None:
    kubectl.apply(_training_job(runPolicy={"suspend": True}), "-n", ml_namespace)
    wait_for(lambda: kubectl.find("job", "churn", ml_namespace), 60, "the Job")
    kubectl.run("delete", "trainingjob", "churn", "-n", ml_namespace)
    children = [
        ("job", "churn"),
        ("service", "churn-workers"),
        ("serviceaccount", "churn-trainer"),
        ("role", "churn-trainer"),
        ("rolebinding", "churn-trainer"),
    ]
    for resource, name in children:
        wait_for(partial(kubectl.gone, resource, name, ml_namespace), 90, f"{resource}/{name} to be collected")
