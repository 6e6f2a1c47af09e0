"""The capture proxy in front of a real Triton server: answers untouched, a sample of inferences in files."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import logging
import math
import os
import queue
import signal
import subprocess
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from scaleml_api.v1alpha1.modeldeployment import CaptureFormat
from scaleml_workloads.capture.files import (
    DATATYPES,
    CaptureFiles,
    Sample,
    Tensor,
    TensorSpec,
    capture_files,
    file_name,
    read_capture_file,
    read_captures,
    read_layout,
    this_instance,
)
from scaleml_workloads.capture.kserve import HEADER_LENGTH, GrpcExchange
from scaleml_workloads.capture.writer import CaptureWriter
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.workloads.runs import MODEL_NAME, PYTHON
from tests.workloads.serving import Server, feature_batch, serving_run, triton

pytestmark = pytest.mark.workloads

Array = npt.NDArray[Any]
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
# The response headers a KServe client reads.
HEADERS_THAT_MATTER = ("Content-Type", "Content-Length", "Content-Encoding", HEADER_LENGTH)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def call(
    address: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30
) -> Answer:
    """One request with exactly `headers`, besides Host and Content-Length: no client defaults (Accept-Encoding)."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.putrequest("GET" if body is None else "POST", path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, _kept(response.headers), response.read())
    finally:
        connection.close()


def _kept(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in HEADERS_THAT_MATTER if headers.get(name) is not None}


@dataclass(frozen=True)
class CaptureProxy:
    process: subprocess.Popen[bytes]
    http: str
    grpc: str
    metrics_port: int
    log: Path

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        raise AssertionError(f"no metric {name}{labels} in:\n{text}")

    def stop(self) -> int:
        """Sends SIGTERM, as the kubelet does, and returns the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


def _answer(process: subprocess.Popen[bytes], http: str) -> Answer | None:
    """The proxy's answer to a readiness probe; None while it does not listen yet."""
    if process.poll() is not None:
        raise AssertionError(f"the capture proxy exited with code {process.returncode}")
    with contextlib.suppress(ConnectionError):
        return call(http, "/v2/health/ready")
    return None


@contextlib.contextmanager
def capture_proxy(
    upstream_http: str, upstream_grpc: str, directory: Path, logs: Path, *options: str
) -> Iterator[CaptureProxy]:
    """`python -m scaleml_workloads.capture` on free ports, once it answers over HTTP."""
    http, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        PYTHON,
        "-m",
        "scaleml_workloads.capture",
        f"--upstream-http={upstream_http}",
        f"--upstream-grpc={upstream_grpc}",
        f"--http-port={http}",
        f"--grpc-port={grpc_port}",
        f"--metrics-port={metrics_port}",
        f"--directory={directory}",
        *options,
    ]
    log = logs / f"capture-proxy-{http}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        proxy = CaptureProxy(process, f"127.0.0.1:{http}", f"127.0.0.1:{grpc_port}", metrics_port, log)
        try:
            wait_for(lambda: _answer(process, proxy.http), timeout=30, message="the capture proxy")
            yield proxy
        except BaseException:
            print(log.read_text()[-4000:])
            raise
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def server(exported_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Triton server for the module's tests, serving the churn model."""
    root = tmp_path_factory.mktemp("capture-triton")
    with triton(serving_run(exported_model, root), root) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CaptureProxy]:
    """A proxy that captures nothing, for the tests of its answers."""
    root = tmp_path_factory.mktemp("capture-proxy")
    (root / "captures").mkdir()
    with capture_proxy(server.http, server.grpc, root / "captures", root, "--sample-rate=0") as running:
        yield running


def http_input(batch: Array, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return tensor


def grpc_input(batch: Array) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    return tensor


def infer_http(
    client: httpclient.InferenceServerClient, batch: Array, request_id: str = "", binary: bool = True
) -> Array:
    result = client.infer(MODEL_NAME, [http_input(batch, binary)], request_id=request_id)
    outputs: Array = result.as_numpy("OUTPUT__0")
    return outputs


def infer_grpc(client: grpcclient.InferenceServerClient, batch: Array, request_id: str = "") -> Array:
    outputs: Array = client.infer(MODEL_NAME, [grpc_input(batch)], request_id=request_id).as_numpy("OUTPUT__0")
    return outputs


REQUEST_FORMS = {
    "binary-outputs": ({}, True),
    "json-outputs": ({}, False),
    "gzip-answer": ({"Accept-Encoding": "gzip"}, True),
}


@pytest.mark.parametrize(("extra_headers", "binary_outputs"), REQUEST_FORMS.values(), ids=REQUEST_FORMS)
def test_http_inferences_are_answered_byte_for_byte_as_triton_answers(
    server: Server, proxy: CaptureProxy, extra_headers: dict[str, str], binary_outputs: bool
) -> None:
    batch = feature_batch(7, seed=3)
    output = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary_outputs)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [http_input(batch)], outputs=[output], request_id="same"
    )
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(json_size), **extra_headers}

    direct = call(server.http, INFER_PATH, body, headers)
    proxied = call(proxy.http, INFER_PATH, body, headers)

    assert direct.status == 200
    assert (HEADER_LENGTH in direct.headers) == binary_outputs
    assert ("Content-Encoding" in direct.headers) == ("Accept-Encoding" in extra_headers)
    assert proxied == direct
    through_client = httpclient.InferenceServerClient(proxy.http).infer(
        MODEL_NAME, [http_input(batch)], outputs=[output]
    )
    assert (
        through_client.as_numpy("OUTPUT__0").tobytes()
        == infer_http(httpclient.InferenceServerClient(server.http), batch).tobytes()
    )


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_request_reaches_triton_as_sent_and_is_captured(
    server: Server, tmp_path: Path, encoding: str
) -> None:
    batch = feature_batch(3, seed=8)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([http_input(batch)])
    compressed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(json_size), "Content-Encoding": encoding}
    directory = tmp_path / "captures"
    directory.mkdir()
    options = ("--sample-rate=1", "--seconds-per-file=0.2")

    direct = call(server.http, INFER_PATH, compressed, headers)
    with capture_proxy(server.http, server.grpc, directory, tmp_path, *options) as proxy:
        proxied = call(proxy.http, INFER_PATH, compressed, headers)
        wait_for(lambda: proxy.metric("scaleml_capture_files_written_total") == 1, timeout=15, message="a file")
        assert proxy.stop() == 0

    assert direct.status == 200
    assert proxied == direct
    np.testing.assert_array_equal(read_captures(directory, newest_rows=10)["INPUT__0"], batch)


def test_request_ids_are_left_out_of_the_captures_unless_asked_for(server: Server, tmp_path: Path) -> None:
    kept: dict[bool, list[str]] = {}
    for request_ids in (False, True):
        directory = tmp_path / f"captures-{request_ids}"
        directory.mkdir()
        options = ("--sample-rate=1", "--seconds-per-file=0.2", *(("--request-ids",) if request_ids else ()))
        with capture_proxy(server.http, server.grpc, directory, tmp_path, *options) as proxy:
            infer_http(httpclient.InferenceServerClient(proxy.http), feature_batch(2), request_id="customer-42")
            infer_grpc(grpcclient.InferenceServerClient(proxy.grpc), feature_batch(1), request_id="customer-43")
            assert proxy.stop() == 0
        kept[request_ids] = sorted(set(read_captures(directory, newest_rows=10)["request_id"].tolist()))

    assert kept == {False: [""], True: ["customer-42", "customer-43"]}


HTTP_CALLS = {
    "health-ready": ("/v2/health/ready", None),
    "health-live": ("/v2/health/live", None),
    "server-metadata": ("/v2", None),
    "model-metadata": (f"/v2/models/{MODEL_NAME}", None),
    "model-config": (f"/v2/models/{MODEL_NAME}/config", None),
    "repository-index": ("/v2/repository/index", b"{}"),
    "unknown-model": ("/v2/models/nope/infer", b'{"inputs": []}'),
    "malformed-request": (INFER_PATH, b'{"inputs": ['),
    "unknown-path": ("/v3/anything?x=1", None),
}


@pytest.mark.parametrize(("path", "body"), HTTP_CALLS.values(), ids=HTTP_CALLS)
def test_other_http_calls_and_errors_pass_through_as_triton_answers_them(
    server: Server, proxy: CaptureProxy, path: str, body: bytes | None
) -> None:
    direct = call(server.http, path, body)
    proxied = call(proxy.http, path, body)

    assert proxied == direct


def test_grpc_calls_are_answered_as_triton_answers_them(server: Server, proxy: CaptureProxy) -> None:
    direct, proxied = grpcclient.InferenceServerClient(server.grpc), grpcclient.InferenceServerClient(proxy.grpc)
    batch = feature_batch(9, seed=4)
    inputs = [grpc_input(batch)]

    def response(client: grpcclient.InferenceServerClient) -> bytes:
        serialized: bytes = client.infer(MODEL_NAME, inputs, request_id="same").get_response().SerializeToString()
        return serialized

    assert response(proxied) == response(direct)
    assert proxied.is_model_ready(MODEL_NAME)
    assert proxied.get_model_metadata(MODEL_NAME) == direct.get_model_metadata(MODEL_NAME)
    assert proxied.get_model_config(MODEL_NAME) == direct.get_model_config(MODEL_NAME)
    checks = []
    for address in (server.grpc, proxy.grpc):
        with grpc.insecure_channel(address) as channel:
            checks.append(channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5))
    assert checks[1] == checks[0] == b"\x08\x01"  # SERVING


def test_grpc_errors_keep_triton_s_status_code_and_details(server: Server, proxy: CaptureProxy) -> None:
    inputs = [grpc_input(feature_batch(1))]
    errors = []
    for address in (server.grpc, proxy.grpc):
        with pytest.raises(InferenceServerException) as raised:
            grpcclient.InferenceServerClient(address).infer("nope", inputs)
        errors.append((raised.value.status(), raised.value.message()))

    assert errors[0][0] == "StatusCode.NOT_FOUND"
    assert errors[1] == errors[0]


def _stream(address: str, batches: list[Array]) -> tuple[dict[str, Array], list[str]]:
    """Streams `batches`, then a request for an unknown model; returns the outputs by request id, and the errors."""
    outputs: dict[str, Array] = {}
    errors: list[str] = []

    def received(result: Any, error: Any) -> None:
        if error:
            errors.append(str(error))
        else:
            outputs[result.get_response().id] = result.as_numpy("OUTPUT__0")

    client = grpcclient.InferenceServerClient(address)
    client.start_stream(callback=received)
    for n, batch in enumerate(batches):
        client.async_stream_infer(MODEL_NAME, [grpc_input(batch)], request_id=str(n))
    client.async_stream_infer("nope", [grpc_input(batches[0])], request_id="unknown")
    wait_for(lambda: len(outputs) + len(errors) == len(batches) + 1, timeout=20, message="the stream's answers")
    client.stop_stream()
    return outputs, errors


def test_the_bidirectional_stream_passes_through(server: Server, proxy: CaptureProxy) -> None:
    batches = [feature_batch(n, seed=n) for n in (1, 4, 2)]

    direct_outputs, direct_errors = _stream(server.grpc, batches)
    outputs, errors = _stream(proxy.grpc, batches)

    assert sorted(outputs) == sorted(direct_outputs) == ["0", "1", "2"]
    for request_id, expected in direct_outputs.items():
        # Triton's dynamic batcher may group the streamed requests differently from one run to the next,
        # which moves the last bits of float outputs.
        np.testing.assert_allclose(outputs[request_id], expected, rtol=1e-5, atol=1e-6)
    assert errors == direct_errors == ["Request for unknown model: 'nope' is not found"]


def test_an_unreachable_triton_is_502_over_http_and_unavailable_over_grpc(tmp_path: Path) -> None:
    nowhere_http, nowhere_grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with capture_proxy(nowhere_http, nowhere_grpc, tmp_path, tmp_path) as proxy:
        assert call(proxy.http, "/v2/health/ready").status == 502
        with pytest.raises(InferenceServerException) as raised:
            grpcclient.InferenceServerClient(proxy.grpc).is_server_ready()
        assert raised.value.status() == "StatusCode.UNAVAILABLE"
        assert proxy.metric("scaleml_capture_requests_total", protocol="grpc", code="UNAVAILABLE") == 1
        assert proxy.stop() == 0


REQUESTS = 400
SAMPLE_RATE = 0.25


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
def test_a_sample_of_the_inferences_is_written_with_their_inputs_and_triton_s_outputs(
    server: Server, tmp_path: Path, file_format: str
) -> None:
    directory = tmp_path / "captures"
    directory.mkdir()
    sizes = np.random.default_rng(5).integers(1, 9, size=REQUESTS)
    sent: dict[str, tuple[Array, Array]] = {}
    options = (f"--sample-rate={SAMPLE_RATE}", "--seed=11", f"--format={file_format}", "--request-ids")
    with capture_proxy(server.http, server.grpc, directory, tmp_path, *options) as proxy:
        http = httpclient.InferenceServerClient(proxy.http)
        grpc_client = grpcclient.InferenceServerClient(proxy.grpc)
        started = time.time()
        for n, size in enumerate(sizes):
            batch, request_id = feature_batch(int(size), seed=n), f"request-{n}"
            if n % 3 == 0:
                outputs = infer_grpc(grpc_client, batch, request_id)
            else:
                outputs = infer_http(http, batch, request_id, binary=n % 3 == 1)
            sent[request_id] = (batch, outputs)
        finished = time.time()
        assert proxy.stop() == 0

    assert not [entry.name for entry in directory.iterdir() if entry.name.startswith(".")]
    captured = read_captures(directory, newest_rows=10 * REQUESTS)
    request_ids = captured["request_id"]
    sampled = set(request_ids.tolist())
    mean, sigma = REQUESTS * SAMPLE_RATE, math.sqrt(REQUESTS * SAMPLE_RATE * (1 - SAMPLE_RATE))
    assert abs(len(sampled) - mean) <= 4 * sigma, f"{len(sampled)} of {REQUESTS} requests captured"
    for request_id in sampled:
        rows = request_ids == request_id
        batch, outputs = sent[request_id]
        np.testing.assert_array_equal(captured["INPUT__0"][rows], batch)
        np.testing.assert_array_equal(captured["OUTPUT__0"][rows], outputs)
        assert len(set(captured["timestamp"][rows].tolist())) == 1
    assert captured["INPUT__0"].dtype == np.float32
    assert set(captured["model"].tolist()) == {MODEL_NAME}
    assert set(captured["model_version"].tolist()) == {"1"}
    assert started <= captured["timestamp"].min() <= captured["timestamp"].max() <= finished
    assert np.all(np.diff(captured["timestamp"]) >= 0)


def test_an_unwritable_volume_drops_samples_and_fails_no_request(server: Server, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    options = ("--sample-rate=1", "--rows-per-file=1")
    direct = httpclient.InferenceServerClient(server.http)
    with capture_proxy(server.http, server.grpc, blocker / "captures", tmp_path, *options) as proxy:
        http = httpclient.InferenceServerClient(proxy.http)
        grpc_client = grpcclient.InferenceServerClient(proxy.grpc)
        for n in range(20):
            batch = feature_batch(n % 4 + 1, seed=n)
            outputs = infer_grpc(grpc_client, batch) if n % 2 else infer_http(http, batch)
            assert outputs.tobytes() == infer_http(direct, batch).tobytes()

        def dropped() -> float:
            return proxy.metric("scaleml_capture_samples_dropped_total", reason="write_error")

        wait_for(lambda: dropped() >= 20, timeout=15, message="20 dropped samples")
        assert dropped() == 20
        assert proxy.metric("scaleml_capture_samples_written_total") == 0
        assert proxy.metric("scaleml_capture_requests_total", protocol="http", code="200") >= 10
        assert proxy.process.poll() is None
        assert infer_http(http, feature_batch(2)).shape == (2, 2)
        assert proxy.stop() == 0

    failures = [line for line in proxy.log.read_text().splitlines() if "cannot write" in line]
    assert len(failures) == 1, "write errors of one kind are logged once a minute"
    assert "Not a directory" in failures[0]


def test_files_rotate_by_rows_and_the_reader_returns_the_newest_rows(server: Server, tmp_path: Path) -> None:
    directory = tmp_path / "captures"
    directory.mkdir()
    batches = [feature_batch(3, seed=100 + n) for n in range(12)]
    options = ("--sample-rate=1", "--rows-per-file=10", "--format=parquet")
    with capture_proxy(server.http, server.grpc, directory, tmp_path, *options) as proxy:
        http = httpclient.InferenceServerClient(proxy.http)
        for batch in batches:
            infer_http(http, batch)
        # Three requests of three rows fill a file of at most ten: three files before the shutdown.
        wait_for(lambda: proxy.metric("scaleml_capture_files_written_total") == 3, timeout=15, message="3 files")
        assert proxy.stop() == 0

    files = capture_files(directory)
    assert [len(read_capture_file(path)["timestamp"]) for path in files] == [9, 9, 9, 9]
    assert sorted(entry.name for entry in directory.iterdir()) == [path.name for path in files]
    newest = read_captures(directory, newest_rows=20)
    np.testing.assert_array_equal(newest["INPUT__0"], np.concatenate(batches)[-20:])
    assert newest["OUTPUT__0"].shape == (20, 2)


def test_at_sigterm_the_proxy_stops_accepting_and_serves_an_open_stream_to_its_end(
    server: Server, tmp_path: Path
) -> None:
    answers: queue.Queue[str] = queue.Queue()
    with capture_proxy(server.http, server.grpc, tmp_path, tmp_path) as proxy:
        client = grpcclient.InferenceServerClient(proxy.grpc)
        client.start_stream(callback=lambda result, error: answers.put(str(error or result.get_response().id)))
        client.async_stream_infer(MODEL_NAME, [grpc_input(feature_batch(2))], request_id="before")
        assert answers.get(timeout=30) == "before"

        proxy.process.send_signal(signal.SIGTERM)

        def refused() -> bool:
            try:
                call(proxy.http, "/v2/health/ready", timeout=1)
            except ConnectionRefusedError:
                return True
            # Accepted in the instant the listener closed, such a connection is never answered: give up on it.
            except (ConnectionError, TimeoutError):
                pass
            return False

        wait_for(refused, timeout=30, message="the proxy to stop accepting connections")
        client.async_stream_infer(MODEL_NAME, [grpc_input(feature_batch(3))], request_id="after")
        assert answers.get(timeout=30) == "after"
        assert proxy.process.poll() is None
        client.stop_stream()
        assert proxy.process.wait(timeout=30) == 0


# Below, the writer and the files without a server.


def grpc_exchange(rows: int, timestamp: float = 0.0, request_id: str = "") -> GrpcExchange:
    request = service_pb2.ModelInferRequest(model_name=MODEL_NAME, id=request_id)
    request.inputs.add(name="INPUT__0", datatype="FP32", shape=[rows, 5])
    request.raw_input_contents.append(feature_batch(rows).tobytes())
    response = service_pb2.ModelInferResponse(model_name=MODEL_NAME, model_version="1")
    response.outputs.add(name="OUTPUT__0", datatype="FP32", shape=[rows, 2])
    response.raw_output_contents.append(np.zeros((rows, 2), np.float32).tobytes())
    return GrpcExchange(timestamp, request.SerializeToString(), response.SerializeToString())


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("scaleml_capture_samples_dropped_total", {"reason": reason}) or 0.0


def test_a_full_queue_drops_and_counts_samples_without_waiting(tmp_path: Path) -> None:
    writer = CaptureWriter(CaptureFiles(tmp_path, "parquet", 100, 60), sample_rate=1.0, max_queue=2)
    before = _dropped("queue_full")

    started = time.monotonic()
    for _ in range(5):
        writer.offer(grpc_exchange(1))

    assert time.monotonic() - started < 0.5
    assert _dropped("queue_full") - before == 3


def test_the_queue_also_holds_at_most_max_queue_bytes(tmp_path: Path) -> None:
    exchange = grpc_exchange(4)
    writer = CaptureWriter(
        CaptureFiles(tmp_path, "parquet", 100, 60), sample_rate=1.0, max_queue=100, max_queue_bytes=2 * exchange.nbytes
    )
    before = _dropped("queue_full")

    for _ in range(5):
        writer.offer(exchange)
    writer.start()
    writer.close(timeout=10)

    assert _dropped("queue_full") - before == 3
    assert [len(read_capture_file(path)["timestamp"]) for path in capture_files(tmp_path)] == [8]


@pytest.mark.parametrize(("rate", "queued"), [(0.0, 0), (1.0, 50)])
def test_rate_zero_samples_nothing_and_rate_one_everything(tmp_path: Path, rate: float, queued: int) -> None:
    writer = CaptureWriter(CaptureFiles(tmp_path, "parquet", 100, 60), sample_rate=rate, max_queue=100, seed=1)
    before = _dropped("queue_full")
    for _ in range(50):
        writer.offer(grpc_exchange(1))
    writer.start()
    writer.close(timeout=10)

    assert sum(len(read_capture_file(path)["timestamp"]) for path in capture_files(tmp_path)) == queued
    assert _dropped("queue_full") == before


def test_an_idle_writer_completes_its_file_after_seconds_per_file(tmp_path: Path) -> None:
    writer = CaptureWriter(CaptureFiles(tmp_path, "npz", 100, seconds_per_file=0.3), sample_rate=1.0, max_queue=10)
    writer.start()
    writer.offer(grpc_exchange(2, timestamp=time.time()))
    try:
        files = wait_for(lambda: capture_files(tmp_path), timeout=5, message="a file completed by age")
    finally:
        writer.close(timeout=10)
    assert len(read_capture_file(files[0])["INPUT__0"]) == 2


def test_undecodable_samples_are_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    writer = CaptureWriter(CaptureFiles(tmp_path, "parquet", 100, 60), sample_rate=1.0, max_queue=10)
    before = _dropped("undecodable")
    writer.start()
    writer.offer(GrpcExchange(0.0, b"\xff\xff", b""))
    writer.offer(grpc_exchange(3))
    writer.close(timeout=10)

    assert _dropped("undecodable") - before == 1
    assert [len(read_capture_file(path)["timestamp"]) for path in capture_files(tmp_path)] == [3]


def test_a_file_is_completed_once_it_holds_max_bytes_of_tensor_data(tmp_path: Path) -> None:
    sample = grpc_exchange(3).decode()
    assert sample.nbytes == 3 * (5 + 2) * 4
    files = CaptureFiles(tmp_path, "npz", rows_per_file=1000, seconds_per_file=60, max_bytes=2 * sample.nbytes + 1)

    flushed = [outcome.rows for _ in range(5) for outcome in files.add(sample)] + [o.rows for o in files.flush()]

    assert flushed == [6, 6, 3]


def test_files_are_written_again_once_the_volume_is_back(tmp_path: Path) -> None:
    volume = tmp_path / "not-yet-mounted"
    files = CaptureFiles(volume, "parquet", rows_per_file=2, seconds_per_file=60)

    [lost] = files.add(grpc_exchange(2).decode())
    volume.mkdir()
    [written] = files.add(grpc_exchange(2).decode())

    assert isinstance(lost.error, FileNotFoundError)
    assert (lost.samples, lost.rows, lost.path) == (1, 2, None)
    assert written.error is None
    assert capture_files(volume) == [written.path]


def _values(datatype: str, shape: tuple[int, ...], seed: int) -> Array:
    rng = np.random.default_rng(seed)
    if datatype == "BYTES":
        return np.array(
            [f"v{value}".encode() for value in rng.integers(0, 99, size=math.prod(shape))], dtype=object
        ).reshape(shape)
    return (rng.normal(size=shape) * 50).astype(DATATYPES[datatype])


@pytest.mark.parametrize("file_format", ["parquet", "npz"])
def test_every_datatype_reads_back_as_written(tmp_path: Path, file_format: CaptureFormat) -> None:
    files = CaptureFiles(tmp_path, file_format, rows_per_file=1000, seconds_per_file=60)
    samples = []
    for n in range(3):
        inputs = tuple(Tensor(datatype, datatype, _values(datatype, (n + 1, 2, 3), n)) for datatype in DATATYPES)
        outputs = (Tensor("OUT", "FP32", _values("FP32", (n + 1, 2), n)),)
        samples.append(Sample(float(n), MODEL_NAME, "4", f"id-{n}", inputs, outputs))
        assert files.add(samples[-1]) == []
    [flushed] = files.flush()
    assert (flushed.samples, flushed.rows, flushed.error) == (3, 6, None)

    columns = read_captures(tmp_path, newest_rows=100)

    assert flushed.path is not None
    assert read_layout(flushed.path) == [
        *(TensorSpec(datatype, "input", datatype, (2, 3)) for datatype in sorted(DATATYPES)),
        TensorSpec("OUT", "output", "FP32", (2,)),
    ]
    assert columns["timestamp"].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    assert columns["request_id"].tolist() == ["id-0", "id-1", "id-1", "id-2", "id-2", "id-2"]
    assert set(columns["model"].tolist()) == {MODEL_NAME}
    for name in [*DATATYPES, "OUT"]:
        expected = np.concatenate([sample.array(name) for sample in samples])
        assert columns[name].dtype == expected.dtype
        assert columns[name].shape == expected.shape
        assert columns[name].tolist() == expected.tolist()


def test_a_new_layout_starts_a_new_file_and_the_reader_keeps_to_the_newest(tmp_path: Path) -> None:
    files = CaptureFiles(tmp_path, "parquet", rows_per_file=1000, seconds_per_file=60)

    def sample(width: int, timestamp: float) -> Sample:
        return Sample(timestamp, MODEL_NAME, "1", "", (Tensor("X", "FP32", np.zeros((2, width), np.float32)),), ())

    assert files.add(sample(3, 1.0)) == []
    [first] = files.add(sample(4, 2.0))
    [second] = files.flush()

    assert first.rows == second.rows == 2
    assert read_captures(tmp_path, newest_rows=100)["X"].shape == (2, 4)


def test_the_reader_skips_corrupt_files_and_hidden_ones(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = CaptureFiles(tmp_path, "parquet", rows_per_file=2, seconds_per_file=60)
    for n in range(3):
        files.add(Sample(float(n), MODEL_NAME, "1", str(n), (Tensor("X", "INT64", np.full((2, 1), n)),), ()))
    (tmp_path / file_name(1.5, "other", 1, "parquet")).write_bytes(b"PAR1 truncated")
    (tmp_path / f".{file_name(9.0, 'other', 1, 'parquet')}").write_bytes(b"half written")

    with caplog.at_level(logging.WARNING):
        newest = read_captures(tmp_path, newest_rows=5)

    assert newest["X"].ravel().tolist() == [0, 1, 1, 2, 2]
    assert f"skipping capture file {tmp_path / file_name(1.5, 'other', 1, 'parquet')}" in caplog.text


def test_a_starting_writer_removes_only_its_pod_s_unfinished_files(tmp_path: Path) -> None:
    mine = tmp_path / f".{file_name(1.0, this_instance(), 7, 'npz')}"
    others = tmp_path / f".{file_name(1.0, 'another-pod', 7, 'npz')}"
    complete = tmp_path / file_name(1.0, this_instance(), 6, "npz")
    for path in (mine, others, complete):
        path.write_bytes(b"")

    CaptureFiles(tmp_path, "npz", 10, 60).remove_stale_temporaries()

    assert sorted(os.listdir(tmp_path)) == sorted([others.name, complete.name])


def test_files_are_named_after_the_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POD_NAME", "churn-7d9f8c-x2x4q")
    files = CaptureFiles(tmp_path, "npz", rows_per_file=1, seconds_per_file=60)

    [flushed] = files.add(grpc_exchange(1, timestamp=1_700_000_000.25).decode())

    assert flushed.path == tmp_path / "captures-20231114T221320.250000Z-churn-7d9f8c-x2x4q-000001.npz"
