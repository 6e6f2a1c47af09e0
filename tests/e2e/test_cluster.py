"""The test control plane behaves like a real cluster where the operator depends on it.

Scheduling, readiness, Job success and failure (KWOK), garbage collection and namespace finalisation
(kube-controller-manager), PodSecurity admission, and RBAC with ServiceAccount tokens.

Manifests are written as plain dicts (the API's camelCase JSON) and turned into client models with
``Model.from_dict``; objects read back are inspected as ``model.to_dict(serialize=True)``, the same
camelCase shape, where fields the server did not set are ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import kubernetes
import pytest
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    AuthenticationV1Api,
    BatchV1Api,
    CoreV1Api,
    RbacAuthorizationV1Api,
    V1ConfigMap,
    V1Deployment,
    V1Job,
    V1Pod,
    V1Role,
    V1RoleBinding,
    V1SelfSubjectReview,
    V1ServiceAccount,
)
from kubernetes.client.exceptions import ApiException

from tests.support.controlplane import (
    DISRUPTION_ANNOTATION,
    EXIT_CODE_ANNOTATION,
    EXIT_REASON_ANNOTATION,
    ControlPlane,
)
from tests.support.fixtures import NamespaceFactory
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

IMAGE = "registry.invalid/scaleml/fake:1"  # never pulled: KWOK runs no containers
TIMEOUT = 60.0


M = TypeVar("M")


class _Model(Protocol):
    def to_dict(self, serialize: bool = False) -> dict[str, Any]: ...


def _build(from_dict: Callable[[dict[str, Any]], M | None], manifest: dict[str, Any]) -> M:
    """``V1Pod.from_dict`` and friends, never ``None``."""
    model = from_dict(manifest)
    assert model is not None
    return model


def _plain(model: _Model) -> dict[str, Any]:
    return model.to_dict(serialize=True)


def _container(name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, **extra}


def _deployment(name: str, replicas: int, **container: Any) -> V1Deployment:
    labels = {"app": name}
    return _build(
        V1Deployment.from_dict,
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [_container(**container)]}},
            },
        },
    )


def _job(name: str, annotations: dict[str, str] | None = None) -> V1Job:
    return _build(
        V1Job.from_dict,
        {
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                    "spec": {"restartPolicy": "Never", "containers": [_container()]},
                },
            },
        },
    )


def _finished_job(
    batch: BatchV1Api, namespace: str, name: str, condition: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """Creates the Job `name` (see `_job`) and waits for its `condition`, Complete or Failed; returns it then."""
    batch.create_namespaced_job(namespace, _job(name, annotations))
    wait_for(
        lambda: _has_condition(_plain(batch.read_namespaced_job_status(name, namespace)), condition),
        TIMEOUT,
        f"job {name} to reach {condition}",
    )
    return _plain(batch.read_namespaced_job_status(name, namespace))


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition["type"] == type_:
            return dict(condition)
    return None


def _has_condition(obj: dict[str, Any], type_: str, status: str = "True") -> bool:
    condition = _condition(obj, type_)
    return condition is not None and condition["status"] == status


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _ready_replicas(apps: AppsV1Api, name: str, namespace: str) -> int:
    status = _plain(apps.read_namespaced_deployment_status(name, namespace))["status"] or {}
    return int(status.get("readyReplicas") or 0)


def test_deployment_pods_are_scheduled_and_become_ready(
    cluster: ControlPlane, k8s_client: ApiClient, namespace: str
) -> None:
    apps, core = AppsV1Api(k8s_client), CoreV1Api(k8s_client)
    apps.create_namespaced_deployment(
        namespace, _deployment("web", 2, resources={"requests": {"cpu": "100m", "memory": "64Mi"}})
    )

    wait_for(lambda: _ready_replicas(apps, "web", namespace) == 2, TIMEOUT, "deployment web: 2 ready replicas")
    pods = [_plain(p) for p in core.list_namespaced_pod(namespace, label_selector="app=web").items]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] in cluster.nodes
        assert pod["status"]["phase"] == "Running"
        assert _has_condition(pod, "Ready")
        assert pod["status"]["podIP"]


def test_gpu_requests_are_scheduled_within_node_capacity(
    cluster: ControlPlane, k8s_client: ApiClient, namespace: str
) -> None:
    core = CoreV1Api(k8s_client)
    node = _plain(core.read_node(cluster.nodes[0]))
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"

    def gpu_pod(name: str, gpus: int) -> V1Pod:
        container = _container(resources={"limits": {"nvidia.com/gpu": str(gpus)}})
        return _build(V1Pod.from_dict, {"metadata": {"name": name}, "spec": {"containers": [container]}})

    core.create_namespaced_pod(namespace, gpu_pod("fits", 8))
    core.create_namespaced_pod(namespace, gpu_pod("too-big", 9))

    wait_for(
        lambda: _plain(core.read_namespaced_pod("fits", namespace))["status"]["phase"] == "Running",
        TIMEOUT,
        "the 8-GPU pod to run",
    )

    def unschedulable() -> bool:
        condition = _condition(_plain(core.read_namespaced_pod("too-big", namespace)), "PodScheduled")
        return condition is not None and condition["status"] == "False" and condition["reason"] == "Unschedulable"

    wait_for(unschedulable, TIMEOUT, "the 9-GPU pod to be reported Unschedulable")


def test_job_pod_succeeds_and_job_completes(k8s_client: ApiClient, namespace: str) -> None:
    batch, core = BatchV1Api(k8s_client), CoreV1Api(k8s_client)
    job = _finished_job(batch, namespace, "ok", "Complete")
    assert job["status"]["succeeded"] == 1
    assert not job["status"]["failed"]
    (pod,) = [_plain(p) for p in core.list_namespaced_pod(namespace, label_selector="app=ok").items]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0


def test_job_pod_with_exit_code_annotation_fails_and_job_fails(k8s_client: ApiClient, namespace: str) -> None:
    batch, core = BatchV1Api(k8s_client), CoreV1Api(k8s_client)
    job = _finished_job(batch, namespace, "boom", "Failed", annotations={EXIT_CODE_ANNOTATION: "3"})
    assert job["status"]["failed"] == 1
    assert not job["status"]["succeeded"]
    failed = _condition(job, "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    assert _condition(job, "Complete") is None
    (pod,) = [_plain(p) for p in core.list_namespaced_pod(namespace, label_selector="app=boom").items]
    assert pod["status"]["phase"] == "Failed"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"


def test_a_pod_annotated_so_ends_with_the_reason_and_disruption_condition_given(
    k8s_client: ApiClient, namespace: str
) -> None:
    batch, core = BatchV1Api(k8s_client), CoreV1Api(k8s_client)
    # What the kernel's OOM killer leaves in the container's status, and what the scheduler's
    # preemption (the eviction API, the taint manager, the kubelet) sets on the pod.
    ending = {
        EXIT_CODE_ANNOTATION: "137",
        EXIT_REASON_ANNOTATION: "OOMKilled",
        DISRUPTION_ANNOTATION: "PreemptionByScheduler",
    }
    _finished_job(batch, namespace, "ended", "Failed", annotations=ending)
    (pod,) = [_plain(p) for p in core.list_namespaced_pod(namespace, label_selector="app=ended").items]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")
    disruption = _condition(pod, "DisruptionTarget")
    assert disruption is not None
    assert (disruption["status"], disruption["reason"]) == ("True", "PreemptionByScheduler")


def test_deleting_an_owner_garbage_collects_its_dependents(k8s_client: ApiClient, namespace: str) -> None:
    core = CoreV1Api(k8s_client)

    def config_map(manifest: dict[str, Any]) -> V1ConfigMap:
        return _build(V1ConfigMap.from_dict, manifest)

    owner = _plain(core.create_namespaced_config_map(namespace, config_map({"metadata": {"name": "owner"}})))
    owner_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    dependent = {"metadata": {"name": "dependent", "ownerReferences": [owner_ref]}}
    core.create_namespaced_config_map(namespace, config_map(dependent))
    core.create_namespaced_config_map(namespace, config_map({"metadata": {"name": "bystander"}}))

    core.delete_namespaced_config_map("owner", namespace)

    wait_for(
        lambda: not _exists(lambda: core.read_namespaced_config_map("dependent", namespace)),
        TIMEOUT,
        "the dependent ConfigMap to be garbage-collected",
    )
    assert _exists(lambda: core.read_namespaced_config_map("bystander", namespace))


def test_deleting_a_deployment_removes_its_replicasets_and_pods(k8s_client: ApiClient, namespace: str) -> None:
    apps, core = AppsV1Api(k8s_client), CoreV1Api(k8s_client)
    apps.create_namespaced_deployment(namespace, _deployment("gone", 1))
    wait_for(lambda: _ready_replicas(apps, "gone", namespace) == 1, TIMEOUT, "deployment gone to be ready")

    apps.delete_namespaced_deployment("gone", namespace)  # background propagation: left to the GC

    wait_for(
        lambda: not apps.list_namespaced_replica_set(namespace).items,
        TIMEOUT,
        "the ReplicaSet to be garbage-collected",
    )
    # The GC deletes the pods gracefully; KWOK's pod-delete stage plays the kubelet and removes them.
    wait_for(lambda: not core.list_namespaced_pod(namespace).items, TIMEOUT, "the pods to be deleted")


def test_deleted_namespace_is_finalized(k8s_client: ApiClient, make_namespace: NamespaceFactory) -> None:
    core = CoreV1Api(k8s_client)
    name = make_namespace()
    core.create_namespaced_config_map(name, _build(V1ConfigMap.from_dict, {"metadata": {"name": "content"}}))

    core.delete_namespace(name)

    wait_for(lambda: not _exists(lambda: core.read_namespace(name)), TIMEOUT, f"namespace {name} to go")


def test_restricted_namespace_rejects_privileged_pods(k8s_client: ApiClient, make_namespace: NamespaceFactory) -> None:
    core = CoreV1Api(k8s_client)
    namespace = make_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})

    privileged = {
        "metadata": {"name": "privileged"},
        "spec": {"containers": [_container(securityContext={"privileged": True})]},
    }
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(namespace, _build(V1Pod.from_dict, privileged))
    assert caught.value.status == 403
    body = str(caught.value.body)
    assert "PodSecurity" in body
    assert "privileged" in body

    # The same namespace admits a pod that meets the restricted profile: it is the policy at work.
    compliant = {
        "metadata": {"name": "compliant"},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                _container(securityContext={"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}})
            ],
        },
    }
    core.create_namespaced_pod(namespace, _build(V1Pod.from_dict, compliant))


def test_service_account_token_authenticates_and_rbac_applies(
    cluster: ControlPlane, k8s_client: ApiClient, namespace: str
) -> None:
    core, rbac = CoreV1Api(k8s_client), RbacAuthorizationV1Api(k8s_client)
    core.create_namespaced_service_account(
        namespace, _build(V1ServiceAccount.from_dict, {"metadata": {"name": "operator"}})
    )
    token = cluster.request_token(namespace, "operator", expiration_seconds=600)
    config_path = cluster.kubeconfig_for_token(token, name=f"{namespace}-operator")
    as_operator: ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(config_path)
    )
    try:
        review = AuthenticationV1Api(as_operator).create_self_subject_review(_build(V1SelfSubjectReview.from_dict, {}))
        assert _plain(review)["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:operator"

        with pytest.raises(ApiException) as caught:
            CoreV1Api(as_operator).list_namespaced_config_map(namespace)
        assert caught.value.status == 403

        role = {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        }
        binding = {
            "metadata": {"name": "operator-reads-configmaps"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        }
        rbac.create_namespaced_role(namespace, _build(V1Role.from_dict, role))
        rbac.create_namespaced_role_binding(namespace, _build(V1RoleBinding.from_dict, binding))

        def allowed() -> bool:
            try:
                CoreV1Api(as_operator).list_namespaced_config_map(namespace)
            except ApiException as exc:
                if exc.status == 403:
                    return False
                raise
            return True

        wait_for(allowed, TIMEOUT, "the RoleBinding to take effect")
    finally:
        as_operator.close()  # type: ignore[no-untyped-call]
