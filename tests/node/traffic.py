"""Serving in real pods: the ModelDeployment the tier's tests apply, and client pods that send it
requests through its Service, as an application would, and count what failed."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow.compute as pc  # type: ignore[import-untyped]

from scaleml_api.profile import DataProfile
from tests.node.conftest import restricted_pod
from tests.support.kubectl import Kubectl
from tests.support.manifests import merged
from tests.workloads.monitoring import model_inputs
from tests.workloads.runs import churn_table

#: Rows per request the clients send.
BATCH = 10

#: The client (a file of the ConfigMap "traffic"). It sends the rows of a JSON file to a KServe v2
#: endpoint, BATCH at a time and round again, until it has had answers from model version `until`
#: for `settle` seconds, or (without `until`) for `duration` seconds, or for `limit` seconds in all.
#: It prints what it counted: failed requests, answers by version, the longest time without an
#: answer, and the first answer's outputs.
CLIENT = """
import json, sys, time, urllib.request
options = json.loads(sys.argv[1])
with open(options["rows"]) as file:
    rows = json.load(file)
size, until = options["batch"], options.get("until")
failures, versions, first, since, offset = 0, {}, None, None, 0
start = answered = time.monotonic()
gap = 0.0


def done():
    elapsed = time.monotonic() - start
    if elapsed >= options["limit"]:
        return True
    if until is None:
        return elapsed >= options["duration"]
    return since is not None and time.monotonic() - since >= options["settle"]


while not done():
    batch = [rows[(offset + index) % len(rows)] for index in range(size)]
    offset += size
    tensor = {"name": "INPUT__0", "shape": [size, len(batch[0])], "datatype": "FP32",
              "data": [value for row in batch for value in row]}
    request = urllib.request.Request(options["url"], json.dumps({"inputs": [tensor]}).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
    except Exception as error:
        failures += 1
        print(time.strftime("%H:%M:%S"), error, file=sys.stderr)
    else:
        now = time.monotonic()
        gap, answered = max(gap, now - answered), now
        version = answer["model_version"]
        versions[version] = versions.get(version, 0) + 1
        first = first or answer["outputs"]
        if version == until and since is None:
            since = now
    time.sleep(0.05)
print(json.dumps({"failures": failures, "versions": versions, "longestGap": gap, "first": first}))
"""


def model_deployment(**changes: Any) -> dict[str, Any]:
    """ModelDeployment churn, serving TrainingJob churn's newest version from one CPU pod; `changes` merged."""
    return merged(
        {
            "apiVersion": "scaleml.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "churn"},
            "spec": {
                "model": {"fromTrainingJob": "churn", "version": "latest"},
                # The test image's Triton (the nvidia-pytriton wheel's) has the python backend alone.
                "backend": "python",
                "instances": {"count": 1, "kind": "cpu"},
                # Two pods fit on the node's two cores beside a monitor, or one more while a rollout surges.
                "resources": {"cpu": "500m", "memory": "2Gi"},
                "replicas": 1,
            },
        },
        {"spec": changes},
    )


def served(kubectl: Kubectl, namespace: str, version: int, name: str = "churn") -> dict[str, Any] | None:
    """ModelDeployment `name`'s status once it is Ready and serves `version`."""
    deployment = kubectl.find("modeldeployment", name, namespace)
    status = (deployment or {}).get("status", {})
    return status if status.get("phase") == "Ready" and status.get("servedVersion") == version else None


def churn_inputs(profile: DataProfile, seed: int, shift: float = 0.0) -> npt.NDArray[np.float32]:
    """The model's inputs for fresh churn rows (another draw than the training data's), feature `a`
    moved by `shift`."""
    table = churn_table(2000, seed=seed)
    table = table.set_column(0, "a", pc.add(table.column("a"), shift))
    inputs = model_inputs(profile, table)
    assert np.isfinite(inputs).all()
    return inputs


def apply_traffic(kubectl: Kubectl, namespace: str, rows: dict[str, npt.NDArray[np.float32]]) -> None:
    """The ConfigMap "traffic": the client, and each of `rows` as a JSON file of that name."""
    data = {"client.py": CLIENT, **{name: json.dumps(inputs.tolist()) for name, inputs in rows.items()}}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "traffic"}, "data": data}
    # Created, not applied: a client-side apply would copy the rows into an annotation, which holds 256 KiB.
    kubectl.run("create", "-n", namespace, "-f", "-", stdin=json.dumps(config_map))


def client_pod(name: str, namespace: str, image: str, rows: str, **options: Any) -> dict[str, Any]:
    """A pod sending the rows of the traffic file `rows` to ModelDeployment churn's Service (see CLIENT)."""
    url = f"http://churn.{namespace}.svc:8000/v2/models/churn/infer"
    settings = {"rows": f"/traffic/{rows}", "url": url, "batch": BATCH, **options}
    pod = restricted_pod(name, f"python /traffic/client.py '{json.dumps(settings)}'", image=image)
    pod["spec"]["volumes"].append({"name": "traffic", "configMap": {"name": "traffic"}})
    pod["spec"]["containers"][0]["volumeMounts"].append({"name": "traffic", "mountPath": "/traffic"})
    return pod


def client_result(kubectl: Kubectl, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    """What the client pod, which ended, counted; its log in the message if it failed."""
    logs = kubectl.run("logs", pod["metadata"]["name"], "-n", namespace).stdout
    assert pod["status"]["phase"] == "Succeeded", logs
    result: dict[str, Any] = json.loads(logs.strip().splitlines()[-1])
    return result
