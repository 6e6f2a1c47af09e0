"""Capture through traces: a real Triton serves, a sample of its requests is traced, the converter writes them out.

Clients call Triton itself; nothing of the capture is on their path. These tests send known
requests over HTTP and gRPC to a real Triton serving the churn model as a pod does: a
python-backend model a TrainingJob exported, which writes the traces of its sampled requests
itself (`runtime.traced_by_triton`). They run the converter (`python -m scaleml_workloads.capture`)
as the pod's sidecar and compare the capture files with what was sent and answered. Triton's own
tracer, which pytorch and onnx models get, is run on every datatype at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from scaleml_api import runtime
from scaleml_api.v1alpha1.modeldeployment import Capture, CaptureFormat
from scaleml_workloads.capture.files import read_captures
from scaleml_workloads.serving import tritonserver
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.workloads.runs import MODEL_NAME, PYTHON
from tests.workloads.serving import Server, feature_batch, serving_run, triton

pytestmark = pytest.mark.workloads

Array = npt.NDArray[Any]
# Triton prints FP32 and FP64 with 6 significant digits: what a trace holds is that close to what was sent.
TRACE_RTOL = 5e-6


@dataclass(frozen=True)
class Converter:
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        values = self.metrics()
        key = (name, tuple(sorted(labels.items())))
        if key not in values:
            raise AssertionError(f"no metric {name}{labels} among {sorted(values)}")
        return values[key]

    def stop(self) -> int:
        """Sends SIGTERM, as the kubelet does once Triton has stopped, and returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def _metrics_answer(converter: Converter) -> bool:
    if converter.process.poll() is not None:
        raise AssertionError(f"the capture converter exited with code {converter.process.returncode}")
    with contextlib.suppress(OSError):
        converter.metric("scaleml_capture_files_written_total")
        return True
    return False


@contextlib.contextmanager
def converter(traces: Path, directory: Path, logs: Path, *options: str) -> Iterator[Converter]:
    """`python -m scaleml_workloads.capture` reading `traces`, writing into `directory`, once its metrics answer."""
    metrics_port = free_port()
    command = [
        PYTHON,
        "-m",
        "scaleml_workloads.capture",
        f"--traces={traces}",
        f"--directory={directory}",
        f"--metrics-port={metrics_port}",
        *options,
    ]
    log = logs / f"capture-converter-{metrics_port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        running = Converter(process, metrics_port, log)
        try:
            wait_for(lambda: _metrics_answer(running), timeout=30, message="the capture converter's metrics")
            yield running
        except BaseException:
            print(log.read_text()[-4000:])
            raise
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class TracedTriton:
    server: Server
    traces: Path


def trace_options(sample_rate: float, traces: Path) -> list[str]:
    return runtime.trace_options(Capture(enabled=True, volume_claim="captures", sample_rate=sample_rate), str(traces))


@contextlib.contextmanager
def traced_triton(model: Path, root: Path, sample_rate: float) -> Iterator[TracedTriton]:
    """Triton serving the churn model with capture on at `sample_rate`, its management APIs behind a key as in a pod."""
    traces = root / "traces"
    traces.mkdir()
    capture = {"enabled": True, "volumeClaim": "captures", "sampleRate": sample_rate}
    run = serving_run(model, root, {"capture": capture}, tracesDir=str(traces))
    assert not runtime.traced_by_triton(run.spec), "the python-backend model writes the traces"
    with triton(run, root, admin_key=secrets.token_hex(16)) as server:
        yield TracedTriton(server, traces)


@pytest.fixture(scope="module")
def every_request(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedTriton]:
    """Every request traced (sample rate 1), for the module's tests that count what was sent."""
    with traced_triton(exported_model, tmp_path_factory.mktemp("traced-triton"), 1.0) as running:
        yield running


def _converter_options(*options: str) -> tuple[str, ...]:
    return ("--seconds-per-file=0.5", *options)


def infer_http(address: str, batch: Array, request_id: str = "", binary: bool = True) -> Array:
    client = httpclient.InferenceServerClient(address)
    tensor = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    outputs: Array = client.infer(MODEL_NAME, [tensor], request_id=request_id).as_numpy("OUTPUT__0")
    return outputs


def infer_grpc(address: str, batch: Array, request_id: str = "") -> Array:
    client = grpcclient.InferenceServerClient(address)
    tensor = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    outputs: Array = client.infer(MODEL_NAME, [tensor], request_id=request_id).as_numpy("OUTPUT__0")
    return outputs


def _rows(directory: Path) -> int:
    """Rows in the complete capture files of `directory`."""
    return len(read_captures(directory, newest_rows=10**6).get("timestamp", ()))


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
def test_requests_over_http_and_grpc_are_captured_as_sent_and_answered(
    every_request: TracedTriton, tmp_path: Path, file_format: CaptureFormat
) -> None:
    directory = tmp_path / "captures"
    directory.mkdir()
    sizes = np.random.default_rng(5).integers(1, 9, size=60)
    sent: dict[str, tuple[Array, Array]] = {}
    options = _converter_options(f"--format={file_format}", "--request-ids", "--seconds-per-file=0.5")
    with converter(every_request.traces, directory, tmp_path, *options) as running:
        started = time.time()
        for n, size in enumerate(sizes):
            batch, request_id = feature_batch(int(size), seed=n), f"request-{n}"
            if n % 3 == 0:
                outputs = infer_grpc(every_request.server.grpc, batch, request_id)
            else:
                outputs = infer_http(every_request.server.http, batch, request_id, binary=n % 3 == 1)
            sent[request_id] = (batch, outputs)
        finished = time.time()
        # Triton writes each trace as it finishes, at any traffic: the converter is a second or two behind.
        wait_for(lambda: _rows(directory) == sizes.sum(), timeout=30, message=f"{sizes.sum()} rows")
        assert running.stop() == 0

    assert not [entry.name for entry in directory.iterdir() if entry.name.startswith(".")]
    captured = read_captures(directory, newest_rows=10_000)
    request_ids = captured["request_id"]
    assert sorted(set(request_ids.tolist())) == sorted(sent), "every request was traced, over HTTP and gRPC"
    assert len(request_ids) == sizes.sum()
    for request_id, (batch, outputs) in sent.items():
        rows = request_ids == request_id
        np.testing.assert_allclose(captured["INPUT__0"][rows], batch, rtol=TRACE_RTOL)
        np.testing.assert_allclose(captured["OUTPUT__0"][rows], outputs, rtol=TRACE_RTOL)
        assert len(set(captured["timestamp"][rows].tolist())) == 1
    assert captured["INPUT__0"].dtype == np.float32
    assert set(captured["model"].tolist()) == {MODEL_NAME}
    assert set(captured["model_version"].tolist()) == {"1"}
    assert started - 1 <= captured["timestamp"].min() <= captured["timestamp"].max() <= finished + 1


def test_triton_traces_one_request_in_every_round_1_over_the_sample_rate(exported_model: Path, tmp_path: Path) -> None:
    directory = tmp_path / "captures"
    directory.mkdir()
    assert runtime.trace_rate(0.3) == 3
    with (
        traced_triton(exported_model, tmp_path, sample_rate=0.3) as traced,
        converter(traced.traces, directory, tmp_path, *_converter_options()) as running,
    ):
        for n in range(30):
            infer_http(traced.server.http, feature_batch(1, seed=n), binary=n % 2 == 0)
        wait_for(lambda: _rows(directory) >= 10, timeout=30, message="10 rows")
        assert running.stop() == 0

    assert _rows(directory) == 10


def test_a_request_without_a_batch_dimension_row_is_counted_not_captured(tmp_path: Path) -> None:
    """Captures hold one row per batch row: what has no rows is counted, and the converter goes on."""
    traces, directory = tmp_path / "traces", tmp_path / "captures"
    traces.mkdir()
    directory.mkdir()
    fine = '{"id":2,"model_name":"m","model_version":1},{"id":2,"timestamps":[{"name":"REQUEST_START","ns":5}]},'
    fine += '{"id":2,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"X","data":"1,2","shape":"1,2","dtype":"INT32"}}'
    scalar = '{"id":1,"model_name":"m","model_version":1},{"id":1,"timestamps":[{"name":"REQUEST_START","ns":4}]},'
    scalar += '{"id":1,"activity":"TENSOR_QUEUE_INPUT","tensor":{"name":"X","data":"7","shape":"","dtype":"INT32"}}'
    (traces / f"{runtime.TRACE_FILE}.0").write_text(f"[{scalar},{fine}]")
    with converter(traces, directory, tmp_path, "--seconds-per-file=0.5") as running:
        wait_for(lambda: _rows(directory), timeout=15, message="the readable trace captured")
        dropped = running.metric("scaleml_capture_samples_dropped_total", reason="undecodable")
        assert running.stop() == 0

    assert dropped == 1
    assert read_captures(directory, newest_rows=10)["X"].tolist() == [[1, 2]]
    assert "trace 1: X: shape [] has no batch of non-empty rows" in running.log.read_text()


def test_an_unwritable_volume_or_a_dead_converter_fails_no_request(every_request: TracedTriton, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    options = _converter_options("--rows-per-file=1")
    with converter(every_request.traces, blocker / "captures", tmp_path, *options) as running:
        for n in range(20):
            batch = feature_batch(n % 4 + 1, seed=n)
            answer = (
                infer_grpc(every_request.server.grpc, batch) if n % 2 else infer_http(every_request.server.http, batch)
            )
            assert answer.shape == (len(batch), 2)

        def dropped() -> float:
            return running.metric("scaleml_capture_samples_dropped_total", reason="write_error")

        wait_for(lambda: dropped() >= 20, timeout=30, message="20 dropped samples")
        assert dropped() == 20
        assert running.metric("scaleml_capture_samples_written_total") == 0
        # Killed, as an OOM kill would: Triton goes on answering, and its traces wait for the next converter.
        running.process.kill()
        running.process.wait()
        for n in range(10):
            infer_http(every_request.server.http, feature_batch(2, seed=n))

    failures = [line for line in running.log.read_text().splitlines() if "cannot write" in line]
    assert len(failures) == 1, "write errors of one kind are logged once a minute"
    assert "Not a directory" in failures[0]
    directory = tmp_path / "captures"
    directory.mkdir()
    with converter(every_request.traces, directory, tmp_path, *_converter_options()) as restarted:
        wait_for(lambda: _rows(directory) >= 20, timeout=30, message="the traces written meanwhile converted")
        assert restarted.stop() == 0
    assert _rows(directory) == 20


def test_a_trace_volume_that_refuses_files_fails_no_request(exported_model: Path, tmp_path: Path) -> None:
    root = tmp_path / "triton"
    root.mkdir()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    capture = {"enabled": True, "volumeClaim": "captures", "sampleRate": 1.0}
    run = serving_run(exported_model, root, {"capture": capture}, tracesDir=str(blocker / "traces"))
    with triton(run, root) as server:
        for n in range(20):
            batch = feature_batch(n % 4 + 1, seed=n)
            answer = infer_grpc(server.grpc, batch) if n % 2 else infer_http(server.http, batch)
            assert answer.shape == (len(batch), 2)
        # The model's thread tries, fails and says so once, in Triton's log.
        wait_for(lambda: "cannot write capture traces" in server.log.read_text(), timeout=15, message="the error")
    assert server.log.read_text().count("cannot write capture traces") == 1


# --- every datatype, through a real Triton --------------------------------------------------------

ECHO_CONFIG = """name: "echo"
backend: "python"
max_batch_size: 8
input [
{inputs}
]
output [
  {{ name: "DOUBLED" data_type: TYPE_FP32 dims: [ 3 ] }},
  {{ name: "SAME_BYTES" data_type: TYPE_STRING dims: [ 2 ] }}
]
instance_group [ {{ kind: KIND_CPU }} ]
"""
ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            floats = pb_utils.get_input_tensor_by_name(request, "FP32").as_numpy()
            strings = pb_utils.get_input_tensor_by_name(request, "BYTES").as_numpy()
            outputs = [pb_utils.Tensor("DOUBLED", floats * 2), pb_utils.Tensor("SAME_BYTES", strings)]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
"""
# KServe datatype -> (Triton config type, width of a row, values of two rows that stress Triton's printing).
ECHO_INPUTS: dict[str, tuple[str, int, Array]] = {
    "FP32": ("TYPE_FP32", 3, np.array([[1.2345678, -3.3e-8, 1e20], [np.inf, -0.0, 7.0]], np.float32)),
    "FP64": ("TYPE_FP64", 2, np.array([[0.1, 1 / 3], [-2.5e-300, 1e300]], np.float64)),
    "FP16": ("TYPE_FP16", 2, np.array([[1.5, 2.25], [0.0, -1.0]], np.float16)),
    # Bytes that are a comma and a quote: Triton prints them raw.
    "INT8": ("TYPE_INT8", 2, np.array([[-5, 44], [34, -128]], np.int8)),
    "UINT8": ("TYPE_UINT8", 2, np.array([[34, 200], [44, 0]], np.uint8)),
    "INT16": ("TYPE_INT16", 2, np.array([[-32768, 7], [1, 2]], np.int16)),
    "INT32": ("TYPE_INT32", 2, np.array([[-(2**31), 2**31 - 1], [0, 3]], np.int32)),
    "INT64": ("TYPE_INT64", 2, np.array([[-7, 2**62], [1, -(2**63)]], np.int64)),
    "UINT16": ("TYPE_UINT16", 2, np.array([[65535, 0], [1, 2]], np.uint16)),
    "UINT32": ("TYPE_UINT32", 2, np.array([[2**32 - 1, 0], [1, 2]], np.uint32)),
    "UINT64": ("TYPE_UINT64", 2, np.array([[2**64 - 1, 0], [1, 2]], np.uint64)),
    "BOOL": ("TYPE_BOOL", 2, np.array([[True, False], [False, True]])),
    "BYTES": ("TYPE_STRING", 2, np.array([[b'a,"b\n', b"\x00\xff"], [b"", b"plain"]], dtype=np.object_)),
}


@pytest.fixture(scope="module")
def echo_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tritonserver.Ports, Path]]:
    """Triton's own tracer on every request, serving a model with an input of every datatype.

    Requests are sent one at a time: with the tracer on, Triton 2.51 aborts under concurrent
    requests to a python-backend model, the only backend of this build.
    """
    root = tmp_path_factory.mktemp("echo-triton")
    model = root / "repository" / "echo"
    (model / "1").mkdir(parents=True)
    inputs = ",\n".join(
        f'  {{ name: "{name}" data_type: {kind} dims: [ {width} ] }}' for name, (kind, width, _) in ECHO_INPUTS.items()
    )
    (model / "config.pbtxt").write_text(ECHO_CONFIG.format(inputs=inputs))
    (model / "1" / "model.py").write_text(ECHO_MODEL)
    traces = root / "traces"
    traces.mkdir()
    try:
        cache = root / "triton-cache"
        tritonserver.backend_directory(cache)
    except tritonserver.TritonUnavailableError as error:
        pytest.fail(str(error))
    ports = tritonserver.Ports(free_port(), free_port(), free_port())
    log = root / "triton.log"
    with log.open("wb") as sink:
        process = tritonserver.start(root / "repository", ports, cache, trace_options(1.0, traces), log=sink)
        try:
            tritonserver.wait_ready(process, ports.http)
            yield ports, traces
        except BaseException:
            print(log.read_text()[-4000:])
            raise
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_datatype_triton_traces_is_captured_exactly_and_fp16_is_counted(
    echo_triton: tuple[tritonserver.Ports, Path], tmp_path: Path, protocol: str
) -> None:
    ports, traces = echo_triton
    directory = tmp_path / "captures"
    directory.mkdir()
    module = httpclient if protocol == "http" else grpcclient
    address = f"127.0.0.1:{ports.http if protocol == 'http' else ports.grpc}"
    client = module.InferenceServerClient(address)
    tensors = []
    for name, (_, _, values) in ECHO_INPUTS.items():
        tensor = module.InferInput(name, list(values.shape), name)
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    answer = client.infer("echo", tensors)
    with converter(traces, directory, tmp_path, "--seconds-per-file=0.5") as running:
        wait_for(lambda: _rows(directory), timeout=30, message="the request captured")
        untraced = running.metric("scaleml_capture_tensors_untraced_total", datatype="FP16")
        assert running.stop() == 0

    captured = read_captures(directory, newest_rows=10)
    assert untraced == 1
    assert "FP16" not in captured, "Triton's traces carry no FP16 data"
    for name, (_, _, values) in ECHO_INPUTS.items():
        if name == "FP16":
            continue
        assert captured[name].dtype == values.dtype, name
        if name in ("FP32", "FP64"):
            np.testing.assert_allclose(captured[name], values, rtol=TRACE_RTOL, atol=0, err_msg=name)
        else:
            assert captured[name].tolist() == values.tolist(), name
    np.testing.assert_allclose(captured["DOUBLED"], answer.as_numpy("DOUBLED"), rtol=TRACE_RTOL)
    assert captured["SAME_BYTES"].tolist() == ECHO_INPUTS["BYTES"][2].tolist()
    assert os.listdir(traces) == []
