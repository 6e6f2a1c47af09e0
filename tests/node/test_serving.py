"""Serving faults in real pods: a Triton container killed during traffic, with two replicas."""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

import pytest

from scaleml_api.profile import DataProfile
from scaleml_api.repository import PROFILE_FILE
from tests.node.conftest import churn_claims, churn_training_job, finished, pod_finished
from tests.node.traffic import apply_traffic, churn_inputs, client_pod, client_result, model_deployment, served
from tests.support.kubectl import Kubectl
from tests.support.node.node import RealNode
from tests.support.polling import wait_for

pytestmark = pytest.mark.node

#: How long the client sends; the kill comes once it has had answers for a few seconds.
TRAFFIC_SECONDS = 60


def _triton_pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    selector = "app.kubernetes.io/name=scaleml-triton,app.kubernetes.io/instance=churn"
    out = kubectl.run("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    pods: list[dict[str, Any]] = json.loads(out)["items"]
    return pods


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status: dict[str, Any] = next(c for c in pod["status"]["containerStatuses"] if c["name"] == name)
    return status


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def _evict(kubectl: Kubectl, namespace: str, pod: str) -> tuple[int, str]:
    """Asks the API server to evict `pod`, as a node drain does; its exit code and what it answered."""
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": namespace}}
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}/eviction"
    result = kubectl.run("create", "--raw", path, "-f", "-", stdin=json.dumps(eviction), check=False)
    return result.returncode, result.stdout + result.stderr


def test_a_killed_triton_container_leaves_the_service_answering_from_the_other_replica(
    real_node: RealNode, workload_image: str, kubectl: Kubectl, ml_namespace: str
) -> None:
    namespace = ml_namespace
    volumes = churn_claims(kubectl, real_node, namespace, 1000)
    kubectl.apply(churn_training_job(resources={"workers": 1}), "-n", namespace)
    trained = wait_for(partial(finished, kubectl, namespace), 300, "the TrainingJob to finish")
    assert trained["status"]["phase"] == "Succeeded", trained["status"]
    kubectl.apply(model_deployment(replicas=2), "-n", namespace)
    ready = wait_for(partial(served, kubectl, namespace, 1), 300, "two replicas serving version 1")
    assert ready["readyReplicas"] == 2
    # With two replicas, the operator keeps all but one through voluntary disruptions.
    budget = kubectl.get("poddisruptionbudget", "churn", namespace)
    assert budget["spec"]["maxUnavailable"] == 1

    profile = DataProfile.model_validate_json((volumes["models"] / "churn" / "1" / PROFILE_FILE).read_text())
    apply_traffic(kubectl, namespace, {"calm.json": churn_inputs(profile, seed=11)})
    client = client_pod("client", namespace, workload_image, "calm.json", duration=TRAFFIC_SECONDS, limit=120)
    kubectl.apply(client, "-n", namespace)
    kubectl.run("wait", "-n", namespace, "--for=jsonpath={.status.phase}=Running", "pod/client", "--timeout=60s")

    # Some seconds of traffic through both replicas first.
    time.sleep(5)
    victim, other = _triton_pods(kubectl, namespace)
    container_id = _container(victim, "triton")["containerID"].removeprefix("containerd://")
    killed = real_node.ctr("tasks", "kill", "--signal", "SIGKILL", container_id)
    assert killed.returncode == 0, killed.stderr

    # The kubelet takes the pod out of the Service's endpoints, and the PDB then refuses to evict
    # the one replica still serving.
    name = victim["metadata"]["name"]
    wait_for(lambda: not _ready(kubectl.get("pod", name, namespace)), 30, "the killed pod to be unready")
    code, answer = _evict(kubectl, namespace, other["metadata"]["name"])
    assert code != 0, answer
    assert "disruption budget" in answer, answer

    # The container restarts in its pod, and the pod serves again.
    def serving_again() -> dict[str, Any] | None:
        pod = kubectl.get("pod", name, namespace)
        return pod if _ready(pod) else None

    restarted = wait_for(serving_again, 120, "the pod to serve again")
    assert _container(restarted, "triton")["restartCount"] == 1

    ended = wait_for(partial(pod_finished, kubectl, namespace, "client"), 150, "the client to finish")
    counted = client_result(kubectl, namespace, ended)
    answered = sum(counted["versions"].values())
    print(
        f"killed Triton container: {counted['failures']} of {answered + counted['failures']} requests failed, "
        f"longest time without an answer {counted['longestGap']:.2f} s"
    )
    # The Service kept answering from the other replica: only requests already routed to the killed
    # container failed, and no stretch went without an answer for longer than the kubelet needs to
    # see the container die and kube-proxy to drop its endpoint.
    assert counted["longestGap"] < 5, counted
    assert counted["failures"] <= answered * 0.05, counted
