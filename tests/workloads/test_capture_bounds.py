"""The capture proxy stays within its pod's memory limit whatever clients send.

The proxy runs as the pod runs it (a process, sample rate 1, every bound at its default) in front
of a stand-in for Triton (tests.workloads.standin_triton) on loopback, and takes at once: HTTP
inferences of 200 MiB each, gzip bombs (well-formed bodies of a few hundred KiB that inflate to
1 GiB), an HTTP body announced larger than the proxy forwards, ModelInfer messages over gRPC
near their bound, and some past it. Its peak resident memory (VmHWM) is read from /proc afterwards and must stay
under the limit the operator gives the capture container.
"""

from __future__ import annotations

import hashlib
import http.client
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2

from scaleml_api.base import quantity_value
from scaleml_operator.builders.modeldeployment import CAPTURE_RESOURCES
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.workloads.test_capture import call, capture_proxy

pytestmark = pytest.mark.workloads

MIB = 1024 * 1024
LIMIT = int(quantity_value(CAPTURE_RESOURCES["limits"]["memory"]))
INFER = "/v2/models/standin/infer"
LARGE_BODY = 200 * MIB
LARGE_REQUESTS = 3
BOMB_INFLATES_TO = 1024 * MIB
BOMBS = 8
GRPC_MESSAGE = 60 * MIB
GRPC_CALLS = 6
# Past the proxy's bound on a gRPC message (64 MiB): refused before it is read.
GRPC_OVERSIZED = 200 * MIB
_PATTERN = hashlib.sha256(b"capture").digest() * (MIB // 32)


def _large_body() -> Iterator[bytes]:
    for _ in range(LARGE_BODY // MIB):
        yield _PATTERN


def _gzip_bomb() -> bytes:
    """A gzip body whose JSON header is valid, followed by BOMB_INFLATES_TO zeros: a few hundred KiB compressed."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    header = b'{"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}'
    parts = [compressor.compress(header)]
    zeros = bytes(MIB)
    parts += [compressor.compress(zeros) for _ in range(BOMB_INFLATES_TO // MIB)]
    parts.append(compressor.flush())
    return b"".join(parts)


def _post_streamed(address: str) -> tuple[int, str, str]:
    """A 200 MiB inference sent as it is produced; Triton's (the stand-in's) account of what arrived."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.putrequest("POST", INFER, skip_accept_encoding=True)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(LARGE_BODY))
        connection.endheaders()
        for chunk in _large_body():
            connection.send(chunk)
        response = connection.getresponse()
        response.read()
        return response.status, response.headers["X-Body-Bytes"], response.headers["X-Body-SHA256"]
    finally:
        connection.close()


def _refused_before_the_body(address: str) -> int:
    """The status of a request that announces 300 MiB and sends none of it: the proxy must not wait for them."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", INFER, skip_accept_encoding=True)
        connection.putheader("Content-Length", str(300 * MIB))
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _grpc_infer(address: str, message: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 2 * len(message))]) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        try:
            answer = service_pb2.ModelInferResponse.FromString(infer(message, timeout=120))
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
    assert answer.id == f"{len(message)}:{hashlib.sha256(message).hexdigest()}"
    return grpc.StatusCode.OK


def _grpc_message(size: int) -> bytes:
    request = service_pb2.ModelInferRequest(model_name="standin")
    request.inputs.add(name="INPUT__0", datatype="UINT8", shape=[1, size - 1024])
    request.raw_input_contents.append(bytes(size - 1024))
    return bytes(request.SerializeToString())


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[str, str]]:
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "tests.workloads.standin_triton", f"--http-port={http_port}"]
    with (tmp_path / "standin.log").open("wb") as log:
        process = subprocess.Popen([*command, f"--grpc-port={grpc_port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            address = f"127.0.0.1:{http_port}"
            wait_for(lambda: _ready(process, address), timeout=30, message="the stand-in upstream")
            yield address, f"127.0.0.1:{grpc_port}"
        finally:
            process.kill()
            process.wait()


def _ready(process: subprocess.Popen[bytes], address: str) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the stand-in exited with code {process.returncode}")
    try:
        return call(address, "/v2/health/ready", timeout=2).status == 200
    except ConnectionError:
        return False


def test_large_bodies_and_gzip_bombs_keep_the_proxy_within_its_memory_limit(
    standin: tuple[str, str], tmp_path: Path
) -> None:
    upstream_http, upstream_grpc = standin
    bomb = _gzip_bomb()
    assert len(bomb) < MIB
    directory = tmp_path / "captures"
    directory.mkdir()
    with capture_proxy(upstream_http, upstream_grpc, directory, tmp_path, "--sample-rate=1") as proxy:
        baseline = _peak_rss(proxy.process.pid)
        bomb_statuses: list[int] = []
        lock = threading.Lock()

        def send_bombs() -> None:
            for _ in range(BOMBS // 2):
                answer = call(proxy.http, INFER, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
                with lock:
                    bomb_statuses.append(answer.status)

        message, oversized = _grpc_message(GRPC_MESSAGE), _grpc_message(GRPC_OVERSIZED)
        with ThreadPoolExecutor(LARGE_REQUESTS + 2 + GRPC_CALLS + 2) as pool:
            large = [pool.submit(_post_streamed, proxy.http) for _ in range(LARGE_REQUESTS)]
            bombs = [pool.submit(send_bombs) for _ in range(2)]
            calls = [pool.submit(_grpc_infer, proxy.grpc, message) for _ in range(GRPC_CALLS)]
            too_large = [pool.submit(_grpc_infer, proxy.grpc, oversized) for _ in range(2)]
            refused = _refused_before_the_body(proxy.http)
            answers = [future.result() for future in large]
            for future in bombs:
                future.result()
            codes = [future.result() for future in calls]
            oversized_codes = [future.result() for future in too_large]

        # Every sample was too large to capture; the writer has seen them all once this count is complete.
        def dropped() -> float:
            return proxy.metric("scaleml_capture_samples_dropped_total", reason="too_large")

        wait_for(lambda: dropped() >= LARGE_REQUESTS + BOMBS + codes.count(grpc.StatusCode.OK), 30, "the drops")
        peak = _peak_rss(proxy.process.pid)
        alive = proxy.process.poll() is None
        assert proxy.stop() == 0

    print(
        f"capture proxy peak RSS {peak / MIB:.0f} MiB (limit {LIMIT / MIB:.0f} MiB, {baseline / MIB:.0f} MiB at "
        f"start); gRPC: {codes}"
    )
    expected = hashlib.sha256(b"".join(_large_body())).hexdigest()
    assert answers == [(200, str(LARGE_BODY), expected)] * LARGE_REQUESTS, "forwarded untouched"
    assert bomb_statuses == [200] * BOMBS
    assert refused == 413
    # The gRPC calls took turns for the proxy's memory, and all went through.
    assert codes == [grpc.StatusCode.OK] * GRPC_CALLS
    assert oversized_codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert alive
    assert peak < LIMIT, f"peak RSS {peak / MIB:.0f} MiB, limit {LIMIT / MIB:.0f} MiB"
    assert _captured_nothing(directory)


def _captured_nothing(directory: Path) -> bool:
    return not [path for path in directory.iterdir() if not path.name.startswith(".")]


def test_a_body_just_within_the_sample_bound_is_captured(standin: tuple[str, str], tmp_path: Path) -> None:
    upstream_http, upstream_grpc = standin
    body = b'{"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}'
    directory = tmp_path / "captures"
    directory.mkdir()
    options = ("--sample-rate=1", "--seconds-per-file=0.2", "--max-sample-mib=1")
    with capture_proxy(upstream_http, upstream_grpc, directory, tmp_path, *options) as proxy:
        assert call(proxy.http, INFER, body, {"Content-Type": "application/json"}).status == 200
        padded = body[:-1] + b', "parameters": {"pad": "' + b"x" * MIB + b'"}}'
        assert call(proxy.http, INFER, padded, {"Content-Type": "application/json"}).status == 200
        wait_for(lambda: proxy.metric("scaleml_capture_files_written_total") == 1, 15, "the file")
        assert proxy.metric("scaleml_capture_samples_dropped_total", reason="too_large") == 1
        assert proxy.stop() == 0
