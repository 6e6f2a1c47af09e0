"""What the watches' caches keep of an object: everything a read uses, without the bulk no read needs."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from scaleml_api.v1alpha1 import MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import MODEL_VERSION_ANNOTATION, PROMOTE_ANNOTATION, ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_api.validation import parse_spec
from scaleml_operator.builders import modeldeployment, trainingjob
from scaleml_operator.builders.meta import Owner
from scaleml_operator.builders.retraining import (
    DRIFT_SINCE_ANNOTATION,
    RETRAIN_OF_LABEL,
    RETRAIN_RULE_ANNOTATION,
    RETRAINED_BY_LABEL,
    lineage,
)
from scaleml_operator.builders.trainingjob import TEMPLATE_HASH
from scaleml_operator.reconcile.cache import MAX_CONTAINERS, pod_summary, slim, without_template
from scaleml_operator.status.modeldeployment import observed as observed_serving
from scaleml_operator.status.pods import TEMPLATE_HASH_LABEL
from scaleml_operator.status.trainingjob import COMPLETION_INDEX
from scaleml_operator.status.trainingjob import observed as observed_training


def test_slim_drops_managed_fields_and_the_annotations_no_read_uses_and_keeps_the_rest() -> None:
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "churn",
            "uid": "u-1",
            "resourceVersion": "7",
            "ownerReferences": [{"uid": "p-1", "controller": True}],
            "managedFields": [{"manager": "scaleml-operator", "fieldsV1": {"f:spec": {}}}],
            "annotations": {
                "scaleml.dev/last-handled-configuration": '{"spec": {}}',
                "kubectl.kubernetes.io/last-applied-configuration": '{"spec": {}}',
                TEMPLATE_HASH: "abc",
            },
        },
        "spec": {"parallelism": 2},
        "status": {"active": 2},
    }
    original = copy.deepcopy(body)

    slimmed = slim(body)

    assert body == original  # the event's own object is not changed
    assert "managedFields" not in slimmed["metadata"]
    assert slimmed["metadata"]["annotations"] == {TEMPLATE_HASH: "abc"}
    assert {key: slimmed["metadata"][key] for key in ("name", "uid", "resourceVersion", "ownerReferences")} == {
        key: body["metadata"][key] for key in ("name", "uid", "resourceVersion", "ownerReferences")
    }
    assert slimmed["spec"] == body["spec"]
    assert slimmed["status"] == body["status"]


def test_slim_leaves_no_empty_annotations_behind() -> None:
    body = {"metadata": {"name": "a", "annotations": {"scaleml.dev/last-handled-configuration": "{}"}}}
    assert slim(body) == {"metadata": {"name": "a"}}


def test_what_a_pod_holds_beyond_what_the_reads_use_is_not_cached() -> None:
    # A tenant who may create pods can give them the labels the operator's pod watch selects, with as
    # many annotations, labels, owner references and containers as the API server allows.
    tenants = {f"example.com/a{i}": "y" * 1000 for i in range(250)}
    controller = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "churn-7f", "uid": "rs-1", "controller": True}
    others = [{"apiVersion": "v1", "kind": "ConfigMap", "name": f"c{i}", "uid": f"u{i}"} for i in range(2000)]
    containers = [
        {"name": f"c{i}", "image": "busybox", "resources": {"limits": {"memory": "1Gi", f"example.com/r{i}": "1"}}}
        for i in range(1000)
    ]
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "fake-0",
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/name": "scaleml-triton",
                "scaleml.dev/modeldeployment": "churn",
                TEMPLATE_HASH_LABEL: "7f",
                **{f"example.com/l{i}": "y" * 63 for i in range(2000)},
            },
            "annotations": {**tenants, MODEL_VERSION_ANNOTATION: "3"},
            "ownerReferences": [*others[:1000], controller, *others[1000:]],
        },
        "spec": {"initContainers": containers, "containers": containers},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": f"c{i}", "ready": True} for i in range(1000)],
            "initContainerStatuses": [{"name": f"c{i}", "ready": True} for i in range(1000)],
        },
    }

    cached = pod_summary(pod)

    assert cached["metadata"]["annotations"] == {MODEL_VERSION_ANNOTATION: "3"}
    assert cached["metadata"]["labels"] == {TEMPLATE_HASH_LABEL: "7f"}
    assert cached["metadata"]["ownerReferences"] == [controller]
    for key in ("initContainers", "containers"):
        assert len(cached["spec"][key]) == MAX_CONTAINERS
        assert cached["spec"][key][0] == {"name": "c0", "resources": {"limits": {"memory": "1Gi"}}}
    assert [len(cached["status"][key]) for key in ("containerStatuses", "initContainerStatuses")] == [
        MAX_CONTAINERS
    ] * 2
    assert len(json.dumps(cached)) < 3000


def test_the_annotations_the_reads_use_are_cached() -> None:
    # A ModelDeployment's promote annotation and a retraining job's record of its drift episode are
    # read from the cached parents.
    promoted = {"metadata": {"name": "churn", "annotations": {PROMOTE_ANNOTATION: "4", "team": "x" * 4096}}}
    retrained = {
        "metadata": {
            "name": "churn-retrain-1",
            "labels": {RETRAINED_BY_LABEL: "churn", RETRAIN_OF_LABEL: "churn"},
            "annotations": {DRIFT_SINCE_ANNOTATION: "2026-12-05T10:00:00Z", RETRAIN_RULE_ANNOTATION: "drift"},
        }
    }

    assert slim(promoted)["metadata"]["annotations"] == {PROMOTE_ANNOTATION: "4"}
    assert lineage(slim(retrained)["metadata"]) == lineage(retrained["metadata"]) is not None


# The children as the operator renders them, with a status as the API server would report it: the
# projections must keep whatever the status functions read of them.
_OWNER = Owner("TrainingJob", "churn", "ml", "p-1")
_TRAINING: dict[str, Any] = {
    "model": {"architecture": "mlp"},
    "data": {"volumeClaim": "datasets", "source": "churn.parquet", "target": "label"},
    "resources": {"workers": 2, "gpusPerWorker": 1},
    "output": {"volumeClaim": "models", "modelName": "churn"},
}
_SERVING: dict[str, Any] = {
    "model": {"repository": {"volumeClaim": "models", "modelName": "churn"}, "version": 3},
    "replicas": 2,
}
_NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _child(children: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [child for child in children if child["kind"] == kind]
    return {**found, "metadata": {**found["metadata"], "uid": f"{kind}-1", "generation": 2}}


def _pod_of(template: dict[str, Any], name: str, status: dict[str, Any]) -> dict[str, Any]:
    metadata = {**template["metadata"], "name": name, "namespace": "ml", "uid": f"{name}-uid"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"], "status": status}


def _worker(template: dict[str, Any], index: int, status: dict[str, Any]) -> dict[str, Any]:
    """A pod of the training Job as the Job controller makes it: annotated with its worker's index."""
    pod = _pod_of(template, f"churn-{index}", status)
    pod["metadata"]["annotations"] = {**pod["metadata"].get("annotations", {}), COMPLETION_INDEX: str(index)}
    return pod


def _terminated(phase: str, exit_code: int, message: str) -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code, "message": message, "finishedAt": "2026-12-05T11:00:00Z"}}
    return {"phase": phase, "startTime": "2026-12-05T10:00:00Z", "containerStatuses": [{"name": "w", "state": state}]}


def _init_oom_killed(template: dict[str, Any]) -> dict[str, Any]:
    """A worker whose data check (its init container) ran out of memory."""
    (check,) = template["spec"]["initContainers"]
    state = {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-12-05T11:00:00Z"}}
    return {
        "phase": "Failed",
        "startTime": "2026-12-05T10:00:00Z",
        "initContainerStatuses": [{"name": check["name"], "state": state}],
    }


def test_a_training_jobs_status_reads_the_same_from_the_cached_job_and_pods_as_from_whole_ones() -> None:
    spec: TrainingJobSpec = parse_spec(TRAINING_JOB, _TRAINING)
    job = _child(trainingjob.children(_OWNER, spec, "scaleml/workloads:1").apply, "Job")
    template = job["spec"]["template"]
    for job_status, pods in (
        ({"active": 2}, [_worker(template, 0, {"phase": "Running", "startTime": "2026-12-05T10:00:00Z"})]),
        (
            {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]},
            [_worker(template, 1, _terminated("Failed", 2, "data.target: no column 'label'"))],
        ),
        (
            {"failed": 2, "conditions": [{"type": "Failed", "status": "True", "reason": "MaxFailedIndexesExceeded"}]},
            [_worker(template, 1, _terminated("Failed", 139, "")), _worker(template, 0, _terminated("Failed", 75, ""))],
        ),
        (
            {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]},
            [_worker(template, 0, _init_oom_killed(template))],
        ),
        (
            {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]},
            [_worker(template, i, _terminated("Succeeded", 0, '{"modelVersion": 4}')) for i in range(2)],
        ),
    ):
        whole = {**job, "status": job_status}
        cached_job, cached_pods = without_template(whole), [pod_summary(pod) for pod in pods]

        assert len(json.dumps(cached_job)) < len(json.dumps(whole)) / 2
        assert observed_training({}, job=cached_job, pods=cached_pods, generation=1, now=_NOW) == observed_training(
            {}, job=whole, pods=pods, generation=1, now=_NOW
        )


def test_a_model_deployments_status_reads_the_same_from_the_cached_deployment_and_pods_as_from_whole_ones() -> None:
    spec: ModelDeploymentSpec = parse_spec(MODEL_DEPLOYMENT, _SERVING)
    owner = Owner("ModelDeployment", "churn", "ml", "p-2")
    source = modeldeployment.resolve_source(spec, None, None)
    assert isinstance(source, modeldeployment.ModelSource)
    deployment = _child(modeldeployment.children(owner, spec, source, ("triton:1", "workloads:1")).apply, "Deployment")
    deployment["status"] = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}
    crashed = {
        "phase": "Running",
        "containerStatuses": [
            {
                "name": "triton",
                "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "failed to load 'churn' version 3"}},
            }
        ],
    }
    pods = [_pod_of(deployment["spec"]["template"], "churn-a", crashed)]

    def observe(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
        return observed_serving(
            {},
            deployment=deployment,
            pods=pods,
            waiting=None,
            version=3,
            endpoints=modeldeployment.endpoints(owner),
            selector="app=churn",
            generation=1,
            now=_NOW,
        )

    assert observe(without_template(deployment), [pod_summary(pod) for pod in pods]) == observe(deployment, pods)


def test_the_projections_leave_the_watched_object_as_it_was() -> None:
    spec: TrainingJobSpec = parse_spec(TRAINING_JOB, _TRAINING)
    job = _child(trainingjob.children(_OWNER, spec, "scaleml/workloads:1").apply, "Job")
    pod = _pod_of(job["spec"]["template"], "churn-0", {"phase": "Pending"})
    originals = copy.deepcopy((job, pod))

    without_template(job), pod_summary(pod)

    assert (job, pod) == originals
