"""A real Triton server serves what a real training run exported, as a ModelDeployment's pod runs it."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from scaleml_api import runtime
from scaleml_workloads.serving import tritonserver
from scaleml_workloads.serving.agent import sync
from tests.support.polling import wait_for
from tests.workloads.runs import MODEL_NAME
from tests.workloads.serving import (
    expected_outputs,
    export_another_version,
    feature_batch,
    serving_run,
    triton,
)

pytestmark = pytest.mark.workloads

Array = npt.NDArray[np.float32]


def _infer_http(client: httpclient.InferenceServerClient, batch: Array) -> tuple[str, Array]:
    tensor = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer(MODEL_NAME, [tensor])
    return result.get_response()["model_version"], result.as_numpy("OUTPUT__0")


def test_triton_answers_over_http_and_grpc_with_the_trained_models_outputs(
    exported_model: Path, tmp_path: Path
) -> None:
    batch = feature_batch(16)
    expected = expected_outputs(exported_model / "1", batch)

    with triton(serving_run(exported_model, tmp_path), tmp_path) as server:
        version, over_http = _infer_http(httpclient.InferenceServerClient(server.http), batch)
        grpc = grpcclient.InferenceServerClient(server.grpc)
        tensor = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        over_grpc = grpc.infer(MODEL_NAME, [tensor]).as_numpy("OUTPUT__0")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=5) as response:
            metrics = response.read().decode()

    assert version == "1"
    # Latency quantiles, for dashboards and alerts on p99 rather than means.
    assert 'nv_inference_request_summary_us{model="churn",version="1",quantile="0.99"}' in metrics
    np.testing.assert_allclose(over_http, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(over_grpc, expected, rtol=1e-5, atol=1e-6)


RESTRICTED_HTTP = {
    "model-repository": ("POST", "/v2/repository/index", b"{}"),
    "logging": ("GET", "/v2/logging", None),
    "trace": ("GET", "/v2/trace/setting", None),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status", None),
}
OPEN_HTTP = {
    "health": ("GET", "/v2/health/ready", None),
    "metadata": ("GET", f"/v2/models/{MODEL_NAME}", None),
    "model-config": ("GET", f"/v2/models/{MODEL_NAME}/config", None),
    "statistics": ("GET", f"/v2/models/{MODEL_NAME}/stats", None),
}


def _http_status(address: str, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    request = urllib.request.Request(f"http://{address}{path}", data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_tritons_management_apis_answer_only_callers_with_the_pods_key(exported_model: Path, tmp_path: Path) -> None:
    key = "k3y-only-the-pod-knows"
    header = {runtime.ADMIN_KEY_HEADER: key}
    grpc_metadata = ((f"triton-grpc-protocol-{runtime.ADMIN_KEY_HEADER}", key),)
    batch = feature_batch(4)

    with triton(serving_run(exported_model, tmp_path), tmp_path, admin_key=key) as server:
        refused = {api: _http_status(server.http, *call, {}) for api, call in RESTRICTED_HTTP.items()}
        allowed = {api: _http_status(server.http, *call, header) for api, call in RESTRICTED_HTTP.items()}
        open_calls = {api: _http_status(server.http, *call, {}) for api, call in OPEN_HTTP.items()}
        version, _ = _infer_http(httpclient.InferenceServerClient(server.http), batch)
        grpc_client = grpcclient.InferenceServerClient(server.grpc)
        with pytest.raises(InferenceServerException) as raised:
            grpc_client.get_model_repository_index()
        index = grpc_client.get_model_repository_index(headers=dict(grpc_metadata), as_json=True)
        tensor = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        over_grpc = grpc_client.infer(MODEL_NAME, [tensor]).as_numpy("OUTPUT__0")

    assert refused == dict.fromkeys(RESTRICTED_HTTP, 403)
    assert allowed == dict.fromkeys(RESTRICTED_HTTP, 200)
    assert open_calls == dict.fromkeys(OPEN_HTTP, 200)
    assert version == "1"
    assert raised.value.status() == "StatusCode.UNAVAILABLE"
    assert "restricted" in (raised.value.message() or "").lower()
    assert index["models"][0]["name"] == MODEL_NAME
    assert over_grpc.shape == (4, 2)


def test_concurrent_requests_are_batched_into_fewer_executions(exported_model: Path, tmp_path: Path) -> None:
    run = serving_run(exported_model, tmp_path, {"batching": {"maxQueueDelayMicroseconds": 20000}})
    batch = feature_batch(1)

    with triton(run, tmp_path) as server:

        def send(_: int) -> None:
            client = httpclient.InferenceServerClient(server.http)
            for _request in range(25):
                _infer_http(client, batch)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, range(16)))
        stats = httpclient.InferenceServerClient(server.http).get_inference_statistics(MODEL_NAME)["model_stats"][0]

    assert stats["inference_stats"]["success"]["count"] == 16 * 25
    assert stats["execution_count"] < stats["inference_stats"]["success"]["count"] / 2, stats


def test_a_new_version_is_served_without_a_failed_request(exported_model: Path, tmp_path: Path) -> None:
    source = tmp_path / "models" / MODEL_NAME
    shutil.copytree(exported_model, source, symlinks=True)
    batch = feature_batch(4)
    seen: dict[str, int] = {}
    failures: list[str] = []
    stop = threading.Event()

    with triton(serving_run(source, tmp_path), tmp_path) as server:

        def stream() -> None:
            client = httpclient.InferenceServerClient(server.http)
            while not stop.is_set():
                try:
                    version, _ = _infer_http(client, batch)
                    seen[version] = seen.get(version, 0) + 1
                except Exception as error:
                    failures.append(repr(error))

        clients = [threading.Thread(target=stream) for _ in range(4)]
        for client in clients:
            client.start()
        try:
            new = export_another_version(source, seed=11)
            client = httpclient.InferenceServerClient(server.http)
            wait_for(lambda: _infer_http(client, batch)[0] == str(new), 60, f"version {new} to be served")
            served_before = sum(seen.values())
            wait_for(lambda: sum(seen.values()) > served_before + 50, 30, "more requests after the switch")
            served, outputs = _infer_http(client, batch)
        finally:
            stop.set()
            for client_thread in clients:
                client_thread.join()

    assert failures == []
    assert served == str(new)
    assert seen["1"] > 0
    assert seen[str(new)] > 0
    np.testing.assert_allclose(outputs, expected_outputs(source / str(new), batch), rtol=1e-5, atol=1e-6)


def _triton_load_errors(repository: Path, cache: Path) -> str:
    """What a one-shot tritonserver says about loading the repository (it exits: no model loads)."""
    try:
        command = tritonserver.command(repository, tritonserver.Ports(0, 0, 0), cache)
    except tritonserver.TritonUnavailableError as error:
        pytest.fail(str(error))
    result = subprocess.run(
        [*command, "--http-port=0", "--allow-grpc=false", "--allow-metrics=false"],
        env=tritonserver.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    return "\n".join(line for line in (result.stdout + result.stderr).splitlines() if MODEL_NAME in line)


@pytest.mark.parametrize(("backend", "missing"), [("pytorch", "pytorch"), ("onnx", "onnxruntime")])
def test_the_generated_config_passes_tritons_parser_up_to_the_missing_backend(
    exported_model: Path, tmp_path: Path, backend: str, missing: str
) -> None:
    source = tmp_path / "models" / MODEL_NAME
    shutil.copytree(exported_model, source)
    (source / "1" / "model.onnx").write_bytes(b"")  # only the backend would open it
    run = serving_run(
        source,
        tmp_path,
        {
            "backend": backend,
            "batching": {"preferredBatchSizes": [8, 16]},
            "instances": {"count": 2},
            "explain": {"enabled": True},
        },
    )
    sync(run)

    errors = _triton_load_errors(Path(run.serving_dir), tmp_path / "cache")

    # The configuration was read and checked; the load fails only for want of the backend library.
    assert re.search(
        rf"failed to load '{MODEL_NAME}' version 1: Invalid argument: unable to find backend library for backend "
        rf"'{missing}'",
        errors,
    ), errors
    # The explanation model's too, on the libtorch backend whatever the model's (ONNX has no gradients).
    assert re.search(
        rf"failed to load '{MODEL_NAME}-explain' version 1: Invalid argument: unable to find backend library for "
        r"backend 'pytorch'",
        errors,
    ), errors
    assert "proto" not in errors


def test_the_parser_check_tells_a_broken_config_apart(exported_model: Path, tmp_path: Path) -> None:
    run = serving_run(exported_model, tmp_path, {"backend": "pytorch"})
    sync(run)
    config = Path(run.serving_dir) / MODEL_NAME / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size", "max_batch_sizes"))

    errors = _triton_load_errors(Path(run.serving_dir), tmp_path / "cache")

    assert "failed to read text proto" in errors
    assert "backend library" not in errors
