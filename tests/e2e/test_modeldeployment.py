"""ModelDeployment on a cluster with controllers and KWOK nodes, the operator as its ServiceAccount.

KWOK stands in for the kubelet: Triton's pods become Running and Ready without running Triton
(the serving tests run the real server). What is real here is everything around them: the
Deployment controller rolling pods, the HPA and PDB objects, Pod Security admission, the scale
subresource and garbage collection.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest

from tests.e2e.scenario import condition, export, model_deployment, status, training_job
from tests.support.kubectl import Kubectl
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e


def _status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return status(kubectl, "modeldeployment", "churn", namespace)


def _ready_with(kubectl: Kubectl, namespace: str, version: int) -> dict[str, Any] | None:
    status = _status(kubectl, namespace)
    return status if status.get("phase") == "Ready" and status.get("servedVersion") == version else None


def test_a_deployment_waits_for_its_training_job_then_serves_it(kubectl: Kubectl, ml_namespace: str) -> None:
    training_job(kubectl, ml_namespace)
    kubectl.apply(model_deployment(), "-n", ml_namespace)

    waiting = wait_for(
        lambda: _status(kubectl, ml_namespace).get("phase") == "Pending" and _status(kubectl, ml_namespace), 60
    )
    assert condition(waiting, "Ready")["reason"] == "WaitingForModel"
    assert kubectl.find("deployment", "churn-triton", ml_namespace) is None

    export(kubectl, ml_namespace, 1)
    ready = wait_for(partial(_ready_with, kubectl, ml_namespace, 1), 90, "version 1 to be served")

    assert ready["readyReplicas"] == ready["replicas"] == 1
    assert ready["endpoints"] == {
        "http": f"http://churn.{ml_namespace}.svc:8000",
        "grpc": f"churn.{ml_namespace}.svc:8001",
    }
    assert condition(ready, "Progressing")["status"] == "False"
    assert condition(ready, "Degraded")["status"] == "False"
    # Written by the reconcile, and kept by every status refresh the Deployment's events cause since.
    assert condition(ready, "Accepted")["status"] == "True"
    kubectl.await_event_reasons(ml_namespace, "ModelDeployment", {"ModelVersionServed", "ModelDeploymentReady"})

    deployment = json.loads(
        kubectl.run(
            "get", "deployment", "churn-triton", "-n", ml_namespace, "--show-managed-fields", "-o", "json"
        ).stdout
    )
    applied = next(f for f in deployment["metadata"]["managedFields"] if f["manager"] == "scaleml-operator")
    # The HPA owns the replica count: the operator leaves it alone.
    assert "f:replicas" not in applied["fieldsV1"]["f:spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["scaleml.dev/model-version"] == "1"
    triton = pod["spec"]["containers"][0]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert "--model-control-mode=poll" in triton["command"]
    assert "--strict-readiness=true" in triton["command"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {t["key"] for t in pod["spec"]["tolerations"]} == {"nvidia.com/gpu"}
    agent, capture = pod["spec"]["initContainers"]
    assert (agent["name"], agent["restartPolicy"]) == ("model-agent", "Always")
    assert (capture["name"], capture["restartPolicy"]) == ("capture", "Always")
    assert "--trace-config=rate=10" in triton["command"]
    assert "--traces=/traces" in capture["command"]
    assert "--directory=/captures/churn" in capture["command"]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"repository": "models", "captures": "captures"}

    service = kubectl.get("service", "churn", ml_namespace)
    targets = {port["name"]: port["targetPort"] for port in service["spec"]["ports"]}
    assert targets == {"http": "http", "grpc": "grpc", "metrics": "metrics", "capture-metrics": "capture-metrics"}
    hpa = kubectl.get("hpa", "churn", ml_namespace)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)
    assert hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["spec"]["scaleTargetRef"]["name"] == "churn-triton"
    # One replica at least: a budget would block every node drain.
    assert kubectl.find("pdb", "churn", ml_namespace) is None


def test_spec_edits_and_kubectl_scale_reach_the_children(kubectl: Kubectl, ml_namespace: str) -> None:
    training_job(kubectl, ml_namespace)
    export(kubectl, ml_namespace, 1)
    kubectl.apply(model_deployment(autoscaling=None, replicas=1, capture={"enabled": False}), "-n", ml_namespace)
    wait_for(partial(_ready_with, kubectl, ml_namespace, 1), 90, "version 1 to be served")
    assert kubectl.find("hpa", "churn", ml_namespace) is None

    kubectl.run("scale", "modeldeployment", "churn", "-n", ml_namespace, "--replicas=3")

    def scaled() -> dict[str, Any] | None:
        status = _status(kubectl, ml_namespace)
        return status if status.get("readyReplicas") == 3 and status.get("phase") == "Ready" else None

    wait_for(scaled, 90, "three ready replicas")
    assert kubectl.get("deployment", "churn-triton", ml_namespace)["spec"]["replicas"] == 3
    pdb = wait_for(lambda: kubectl.find("pdb", "churn", ml_namespace), 30, "the PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    service = kubectl.get("service", "churn", ml_namespace)
    assert {port["targetPort"] for port in service["spec"]["ports"]} == {"http", "grpc", "metrics"}

    patch = {
        "spec": {
            "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
            "batching": {"maxBatchSize": 8, "preferredBatchSizes": [4, 8]},
        }
    }
    kubectl.run("patch", "modeldeployment", "churn", "-n", ml_namespace, "--type=merge", "-p", json.dumps(patch))

    hpa = wait_for(lambda: kubectl.find("hpa", "churn", ml_namespace), 30, "the HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 2
    wait_for(partial(kubectl.gone, "pdb", "churn", ml_namespace), 30, "the PodDisruptionBudget to go")

    def rendered_with_batch_of_eight() -> bool:
        template = kubectl.get("deployment", "churn-triton", ml_namespace)["spec"]["template"]
        run = json.loads(template["spec"]["initContainers"][0]["env"][0]["value"])
        return bool(run["spec"]["batching"]["maxBatchSize"] == 8)

    wait_for(rendered_with_batch_of_eight, 30, "the new batching in the pod template")


def test_a_new_training_job_version_rolls_the_deployment(kubectl: Kubectl, ml_namespace: str) -> None:
    training_job(kubectl, ml_namespace)
    export(kubectl, ml_namespace, 1)
    kubectl.apply(model_deployment(autoscaling=None, replicas=2), "-n", ml_namespace)
    wait_for(partial(_ready_with, kubectl, ml_namespace, 1), 90, "version 1 to be served")
    first = kubectl.get("deployment", "churn-triton", ml_namespace)["metadata"]["generation"]

    export(kubectl, ml_namespace, 2)

    ready = wait_for(partial(_ready_with, kubectl, ml_namespace, 2), 120, "version 2 to be served")
    deployment = kubectl.get("deployment", "churn-triton", ml_namespace)
    assert deployment["metadata"]["generation"] > first
    assert deployment["spec"]["template"]["metadata"]["annotations"]["scaleml.dev/model-version"] == "2"
    assert deployment["status"]["updatedReplicas"] == 2
    assert ready["readyReplicas"] == 2
    messages = kubectl.run(
        "get",
        "events",
        "-n",
        ml_namespace,
        "--field-selector",
        "reason=ModelVersionServed",
        "-o",
        "jsonpath={.items[*].message}",
    ).stdout
    assert "model version 2" in messages


def test_deleting_the_model_deployment_removes_every_child(kubectl: Kubectl, ml_namespace: str) -> None:
    training_job(kubectl, ml_namespace)
    export(kubectl, ml_namespace, 1)
    kubectl.apply(model_deployment(autoscaling={"minReplicas": 2, "maxReplicas": 3}), "-n", ml_namespace)
    wait_for(partial(_ready_with, kubectl, ml_namespace, 1), 90, "version 1 to be served")
    children = [("deployment", "churn-triton"), ("service", "churn"), ("hpa", "churn"), ("pdb", "churn")]
    for resource, name in children:
        assert kubectl.find(resource, name, ml_namespace) is not None, f"{resource}/{name}"

    kubectl.run("delete", "modeldeployment", "churn", "-n", ml_namespace)

    for resource, name in children:
        wait_for(partial(kubectl.gone, resource, name, ml_namespace), 90, f"{resource}/{name} to be collected")
    wait_for(lambda: not kubectl.run("get", "pods", "-n", ml_namespace, "-o", "name").stdout.strip(), 90, "the pods")


def test_pods_no_node_can_take_are_reported_long_before_the_deadline(kubectl: Kubectl, ml_namespace: str) -> None:
    """No KWOK node has nine GPUs (each has eight). The Deployment would say so after its 10-minute
    progress deadline; the ModelDeployment says it, in the scheduler's words, within seconds."""
    training_job(kubectl, ml_namespace)
    export(kubectl, ml_namespace, 1)
    kubectl.apply(model_deployment(autoscaling=None, replicas=1, resources={"gpus": 9}), "-n", ml_namespace)

    def reported(ready: str) -> dict[str, Any] | None:
        # The scheduler's first words may be of the namespace's claims, not bound yet: its words on the
        # GPUs follow as it tries the pod again, and the status with them.
        status = _status(kubectl, ml_namespace)
        progressing = condition(status, "Progressing")
        unschedulable = progressing.get("reason") == "Unschedulable"
        no_gpus = "Insufficient nvidia.com/gpu" in progressing.get("message", "")
        return status if unschedulable and no_gpus and condition(status, "Ready").get("status") == ready else None

    waiting = wait_for(partial(reported, "False"), 60, "the unschedulable pod to be reported")
    (pod,) = kubectl.run(
        "get", "pods", "-n", ml_namespace, "-l", "scaleml.dev/modeldeployment=churn", "-o", "name"
    ).stdout.split()
    ready = condition(waiting, "Ready")
    assert ready["reason"] == "Unschedulable"
    assert f"Pod {pod.removeprefix('pod/')}: Unschedulable: 0/" in ready["message"]
    assert "Insufficient nvidia.com/gpu" in ready["message"]
    assert waiting["phase"] == "Progressing"
    assert condition(waiting, "Degraded")["status"] == "False"
    kubectl.await_event_reasons(ml_namespace, "ModelDeployment", {"Unschedulable"})

    def resources(gpus: int) -> None:
        patch = json.dumps({"spec": {"resources": {"gpus": gpus}}})
        kubectl.run("patch", "md", "churn", "-n", ml_namespace, "--type=merge", "-p", patch)

    # One GPU fits: version 1 is served. Then a template that fits no node rolls out: the served pod stays.
    resources(1)
    wait_for(partial(_ready_with, kubectl, ml_namespace, 1), 90, "version 1 to be served")
    resources(9)

    rolling = wait_for(partial(reported, "True"), 60, "the rollout's unschedulable pod to be reported")
    assert rolling["phase"] == "Progressing"
    assert rolling["readyReplicas"] == 1
    message = condition(rolling, "Ready")["message"]
    assert message.startswith(
        "1/1 replicas ready. The previous template's pods still serve model version 1; the newest template's "
        "cannot start. Pod churn-triton-"
    )
    assert "Insufficient nvidia.com/gpu" in message
    deployment = kubectl.get("deployment", "churn-triton", ml_namespace)
    assert condition(deployment["status"], "Progressing")["reason"] != "ProgressDeadlineExceeded"
