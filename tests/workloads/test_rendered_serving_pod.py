"""The serving pod the operator renders for a ModelDeployment, run for real: the model agent, then Triton.

What the kubelet would do is done by hand: the mount paths become local directories and the
sidecar's startup probe becomes a poll of its /healthz. The commands, options and the agent's
config are the operator's own output; the Triton binary is the one from nvidia-pytriton.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from scaleml_api import runtime
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import Owner
from scaleml_workloads.capture.files import capture_files, read_captures
from scaleml_workloads.serving import tritonserver
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.workloads.runs import MODEL_NAME
from tests.workloads.serving import expected_outputs, feature_batch

pytestmark = pytest.mark.workloads

OWNER = Owner("ModelDeployment", "churn", "ml", "77aa-uid")


def _pod(version: int, **fields: Any) -> dict[str, Any]:
    spec = ModelDeploymentSpec.model_validate({"model": {"fromTrainingJob": "churn"}, "backend": "python", **fields})
    source = build.ModelSource("models", MODEL_NAME, version)
    pod: dict[str, Any] = build.pod_template(OWNER, spec, source, ("tritonserver", "workloads"))["spec"]
    return pod


def _local(value: str, mounts: Mapping[str, Path | str]) -> str:
    for mount, directory in mounts.items():
        value = value.replace(mount, str(directory))
    return value


def test_the_rendered_agent_and_triton_serve_the_exported_version(exported_model: Path, tmp_path: Path) -> None:
    pod = _pod(version=1)
    (agent,) = pod["initContainers"]
    (triton,) = pod["containers"]
    mounts = {runtime.REPOSITORY_DIR: exported_model.parent, runtime.SERVING_DIR: tmp_path / "serving"}
    config = json.loads(_local(agent["env"][0]["value"], mounts))
    health = free_port()
    config["healthPort"] = health
    agent_env = {**os.environ, runtime.CONFIG_ENV: json.dumps(config)}
    assert agent["command"][:3] == ["python", "-m", "scaleml_workloads.serving.agent"]

    sidecar = subprocess.Popen([sys.executable, *agent["command"][1:]], env=agent_env)
    server = None
    try:
        wait_for(lambda: _status(health) == 200, 30, "the agent's startup probe")
        ports = tritonserver.Ports(free_port(), free_port(), free_port())
        _binary, *options = tritonserver.command(tmp_path / "serving", ports, tmp_path / "cache")
        # The pod's command, with the local ports and backends the wheel needs, and its tritonserver on PATH.
        command = [_local(part, mounts) for part in triton["command"]] + options[len(runtime.triton_options("")) :]
        environment = tritonserver.environment()
        environment["PATH"] = f"{tritonserver.binary().parent}{os.pathsep}{environment['PATH']}"
        with (tmp_path / "triton.log").open("wb") as log:
            server = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
            tritonserver.wait_ready(server, ports.http)
        batch = feature_batch(8, seed=3)
        tensor = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = httpclient.InferenceServerClient(f"127.0.0.1:{ports.http}").infer(MODEL_NAME, [tensor])
        key = (tmp_path / "serving" / runtime.ADMIN_KEY_FILE).read_text()
        index = f"http://127.0.0.1:{ports.http}/v2/repository/index"
        without_key = _post(index)
        with_key = _post(index, {runtime.ADMIN_KEY_HEADER: key})
    finally:
        for process in (server, sidecar):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)

    assert result.get_response()["model_version"] == "1"
    # Triton's management APIs take the key the agent made in the pod, and only that.
    assert without_key[0] == 403
    assert with_key[0] == 200
    assert json.loads(with_key[1])[0]["name"] == MODEL_NAME
    assert stat.S_IMODE((tmp_path / "serving" / runtime.ADMIN_KEY_FILE).stat().st_mode) == 0o640
    assert len(key) >= 40
    np.testing.assert_allclose(
        result.as_numpy("OUTPUT__0"), expected_outputs(exported_model / "1", batch), rtol=1e-5, atol=1e-6
    )
    served_config = (tmp_path / "serving" / MODEL_NAME / "config.pbtxt").read_text()
    assert "specific: { versions: [ 1 ] }" in served_config


def test_the_agent_holds_the_pod_back_until_the_pinned_version_exists(exported_model: Path, tmp_path: Path) -> None:
    pod = _pod(version=9)
    (agent,) = pod["initContainers"]
    mounts = {runtime.REPOSITORY_DIR: exported_model.parent, runtime.SERVING_DIR: tmp_path / "serving"}
    config = json.loads(_local(agent["env"][0]["value"], mounts))
    health = free_port()
    config["healthPort"] = health
    sidecar = subprocess.Popen(
        [sys.executable, *agent["command"][1:]],
        env={**os.environ, runtime.CONFIG_ENV: json.dumps(config)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _status(health) == 503, 30, "the agent's health endpoint")
    finally:
        sidecar.terminate()
        _, log = sidecar.communicate(timeout=30)

    assert "waiting for version 9 of churn" in log
    assert not (tmp_path / "serving" / MODEL_NAME / "9").exists()


def _post(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=b"{}", headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def _status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, ConnectionError):
        return 0


def test_with_capture_the_rendered_triton_traces_and_the_rendered_converter_writes_captures(
    exported_model: Path, tmp_path: Path
) -> None:
    pod = _pod(version=1, capture={"enabled": True, "volumeClaim": "captures", "sampleRate": 0.5})
    agent, converter = pod["initContainers"]
    (triton,) = pod["containers"]
    mounts = {
        runtime.REPOSITORY_DIR: exported_model.parent,
        runtime.SERVING_DIR: tmp_path / "serving",
        runtime.TRACE_DIR: tmp_path / "traces",
        runtime.CAPTURE_DIR: tmp_path / "captures",
    }
    for directory in (tmp_path / "traces", tmp_path / "captures"):
        directory.mkdir()
    config = json.loads(_local(agent["env"][0]["value"], mounts))
    health = free_port()
    config["healthPort"] = health
    ports = tritonserver.Ports(free_port(), free_port(), free_port())
    metrics = free_port()
    local_ports: dict[str, Path | str] = {
        **mounts,
        f"--metrics-port={runtime.CAPTURE_METRICS_PORT}": f"--metrics-port={metrics}",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, *agent["command"][1:]], env={**os.environ, runtime.CONFIG_ENV: json.dumps(config)}
        )
    ]
    try:
        wait_for(lambda: _status(health) == 200, 30, "the agent's startup probe")
        converter_command = [sys.executable, *(_local(part, local_ports) for part in converter["command"][1:])]
        with (tmp_path / "converter.log").open("wb") as log:
            processes.append(
                subprocess.Popen(converter_command, env={**os.environ, "POD_NAME": "churn-abc"}, stdout=log, stderr=log)
            )
        _binary, *options = tritonserver.command(tmp_path / "serving", ports, tmp_path / "cache")
        command = [_local(part, mounts) for part in triton["command"]] + options[len(runtime.triton_options("")) :]
        environment = tritonserver.environment()
        environment["PATH"] = f"{tritonserver.binary().parent}{os.pathsep}{environment['PATH']}"
        with (tmp_path / "triton.log").open("wb") as log:
            processes.append(subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT))
            tritonserver.wait_ready(processes[-1], ports.http)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports.http}")
        for n in range(20):
            batch = feature_batch(1, seed=n)
            tensor = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            client.infer(MODEL_NAME, [tensor])
        # Triton first, then the converter, as the kubelet stops a pod's sidecars after its containers.
        for process in reversed(processes[1:]):
            process.terminate()
            process.wait(timeout=30)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        print((tmp_path / "converter.log").read_text()[-3000:])

    # The claim may be shared: the ModelDeployment's files are in its own directory on it, made by the converter.
    assert [path.name for path in (tmp_path / "captures").iterdir()] == [OWNER.name]
    own = tmp_path / "captures" / OWNER.name
    captured = read_captures(own, newest_rows=100)
    # One request in every two.
    assert len(captured["timestamp"]) == 10
    assert set(captured["model"]) == {MODEL_NAME}
    assert [path.name.split("-")[2:4] for path in capture_files(own)] == [["churn", "abc"]]
