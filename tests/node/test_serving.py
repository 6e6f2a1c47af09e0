"""A ModelDeployment in real pods: the version a TrainingJob exported, served by Triton behind its Service.

The Triton pod is the operator's: the model agent and the capture converter as native sidecars,
Triton started once the agent linked the version, probes, a preStop drain, a read-only root. Client
pods in the same namespace send requests through the Service, as an application would, and count
what failed, also while the Deployment rolls to the version a second TrainingJob exports.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import numpy as np
import pytest

from tests.node.conftest import (
    TRAINING_CLAIMS,
    churn_claims,
    churn_training_job,
    finished,
    pod_finished,
    restricted_pod,
    run_to_end,
)
from tests.support.kubectl import Kubectl
from tests.support.node.node import RealNode
from tests.support.polling import wait_for
from tests.workloads.serving import expected_outputs, feature_batch

pytestmark = pytest.mark.node

#: Sends the batch in argv[1] to the KServe v2 endpoint in argv[2] until it has had answers from model
#: version argv[3] for argv[4] seconds (or for argv[5] seconds in all); prints what it counted.
CLIENT = """
import json, sys, time, urllib.request
batch, url, until = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
settle, limit = float(sys.argv[4]), float(sys.argv[5])
body = json.dumps({"inputs": [{"name": "INPUT__0", "shape": [len(batch), len(batch[0])], "datatype": "FP32",
                               "data": [value for row in batch for value in row]}]}).encode()
failures, versions, outputs, since, start = 0, {}, None, None, time.monotonic()
while time.monotonic() - start < limit and (since is None or time.monotonic() - since < settle):
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
    except Exception as error:
        failures += 1
        print(error, file=sys.stderr)
    else:
        version = answer["model_version"]
        versions[version] = versions.get(version, 0) + 1
        outputs = answer["outputs"]
        if version == until and since is None:
            since = time.monotonic()
    time.sleep(0.05)
print(json.dumps({"failures": failures, "versions": versions, "outputs": outputs}))
"""


def _model_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "scaleml.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn"},
        "spec": {
            "model": {"fromTrainingJob": "churn", "version": "latest"},
            # The test image's Triton (the nvidia-pytriton wheel's) has the python backend alone.
            "backend": "python",
            "instances": {"count": 1, "kind": "cpu"},
            # Two pods fit on the node's two cores while a rollout surges.
            "resources": {"cpu": "500m", "memory": "2Gi"},
            "replicas": 1,
            "capture": {"enabled": True, "sampleRate": 1.0, "volumeClaim": "captures"},
        },
    }


def _served(kubectl: Kubectl, namespace: str, version: int) -> dict[str, Any] | None:
    deployment = kubectl.find("modeldeployment", "churn", namespace)
    status = (deployment or {}).get("status", {})
    return status if status.get("phase") == "Ready" and status.get("servedVersion") == version else None


def test_triton_serves_through_the_service_captures_and_rolls_to_a_new_version_without_a_failed_request(
    real_node: RealNode, workload_image: str, kubectl: Kubectl, ml_namespace: str
) -> None:
    namespace = ml_namespace
    volumes = churn_claims(kubectl, real_node, namespace, 1000, (*TRAINING_CLAIMS, "captures"))
    kubectl.apply(churn_training_job(resources={"workers": 1}), "-n", namespace)
    trained = wait_for(partial(finished, kubectl, namespace), 300, "the TrainingJob to finish")
    assert trained["status"]["phase"] == "Succeeded", trained["status"]

    kubectl.apply(_model_deployment(), "-n", namespace)
    ready = wait_for(partial(_served, kubectl, namespace, 1), 300, "version 1 to be served")
    assert ready["readyReplicas"] == 1

    batch = feature_batch(8)
    url = f"http://churn.{namespace}.svc:8000/v2/models/churn/infer"

    def client(name: str, until: int, settle: float, limit: float) -> dict[str, Any]:
        command = f"python -c '{CLIENT}' '{json.dumps(batch.tolist())}' {url} {until} {settle} {limit}"
        return restricted_pod(name, command, image=workload_image)

    first = run_to_end(kubectl, namespace, client("client", 1, 2, 60), timeout=120)
    logs = kubectl.run("logs", "client", "-n", namespace).stdout
    assert first["status"]["phase"] == "Succeeded", logs
    answer = json.loads(logs.strip().splitlines()[-1])
    assert answer["failures"] == 0, logs
    [output] = answer["outputs"]
    assert output["name"] == "OUTPUT__0"
    got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, expected_outputs(volumes["models"] / "churn" / "1", batch), rtol=1e-5, atol=1e-6)
    # Every request sampled: the converter sidecar writes them to the captures claim.
    wait_for(lambda: any(path.is_file() for path in volumes["captures"].rglob("*")), 90, "captured requests")

    # A second TrainingJob exports version 2 into the same repository while a client keeps sending.
    kubectl.apply(client("steady", 2, 15, 600), "-n", namespace)
    kubectl.run("wait", "-n", namespace, "--for=jsonpath={.status.phase}=Running", "pod/steady", "--timeout=60s")
    again = churn_training_job(resources={"workers": 1})
    again["metadata"]["name"] = "churn-again"
    kubectl.apply(again, "-n", namespace)
    wait_for(partial(_served, kubectl, namespace, 2), 480, "version 2 to be served")
    steady = wait_for(partial(pod_finished, kubectl, namespace, "steady"), 120, "the steady client to finish")
    logs = kubectl.run("logs", "steady", "-n", namespace).stdout
    assert steady["status"]["phase"] == "Succeeded", logs
    counted = json.loads(logs.strip().splitlines()[-1])
    # Through the rollout, every request was answered: by version 1 until version 2 took over.
    assert counted["failures"] == 0, logs
    assert set(counted["versions"]) == {"1", "2"}, counted["versions"]
