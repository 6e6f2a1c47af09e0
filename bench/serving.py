"""Serving throughput and latency: Triton as ScaleML configures it, a one-at-a-time baseline, and the capture proxy.

A small tabular model is trained with the training workload and exported as TorchScript. Then,
under the same closed-loop client load (N threads, each sending batch-1 requests back to back),
this measures:

- Triton (the tritonserver of the nvidia-pytriton wheel, on CPU) serving the repository the model
  agent builds: the python backend running the TorchScript file, with dynamic batching as
  `deployment_config` renders ScaleML's defaults, and once more with preferred batch sizes; over
  HTTP and gRPC;
- a baseline: the plainest server that speaks enough of the KServe v2 protocol for tritonclient,
  stdlib `HTTPServer` (one request at a time, one connection per request) running the same file
  with torch;
- the capture proxy (`python -m scaleml_workloads.capture`) in front of the same Triton, to show
  the latency it adds.

Every server runs in its own process; the clients run in this one, and all share the machine's
CPUs, so the table also gives the CPU time per request of the clients and of the servers: on a
small machine it, more than any queue, sets the throughput. Triton's own statistics give the batch
sizes its dynamic batcher formed. Targets and repeats are interleaved so that drifts of the machine
hit all alike. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from synthetic import write_classification_data

from scaleml_api.card import ModelCard
from scaleml_api.repository import MODEL_CARD_FILE, TORCHSCRIPT_FILE, TRITON_CONFIG_FILE
from scaleml_api.runtime import TERMINATION_LOG_ENV, TORCHRUN_ENV, ServingRun
from scaleml_workloads.export.formats import INPUT_NAME, OUTPUT_NAME
from scaleml_workloads.export.repository import versions
from scaleml_workloads.serving import agent, tritonserver

ROWS = 20_000
FEATURES = 32
HIDDEN = [256, 256]
MODEL = "bench"
# The same version under a second name, served with preferred batch sizes. Without them a batch
# short of 64 leaves once its oldest request has waited the queue delay, and a closed loop of N
# clients never queues more than N; with them, a batch of a preferred size leaves at once.
PREFERRED_MODEL = "bench_preferred"
PREFERRED_SIZES = [8, 16, 32]
BATCH = 1
CONCURRENCY = [1, 8, 32]
WARMUP_SECONDS = 1.0
SECONDS = 4.0
REPEATS = 2
SAMPLE_RATE = 0.1
# torch's default of one intra-op thread per core spins OpenMP threads that wait for a core this
# small machine does not have (clients and servers share it): a batch-1 request then costs
# milliseconds of CPU instead of half of one. One thread, for Triton and the baseline alike.
TORCH_THREADS = 1
CAPTURE_MODULE: Final = "scaleml_workloads.capture"

Protocol = Literal["http", "grpc"]


@dataclass(frozen=True)
class Server:
    """A server process, its log (for a readable failure), and the process groups that work for its requests."""

    process: subprocess.Popen[bytes]
    log: Path
    groups: tuple[int, ...]


@dataclass(frozen=True)
class Target:
    name: str
    protocol: Protocol
    address: str
    model: str
    # Triton's HTTP address, for the statistics of the model that answers; None: not Triton.
    triton: str | None
    server: Server


@dataclass
class Trial:
    latencies: list[float]
    seconds: float
    # Sent in the whole trial, warm-up included (what the capture proxy saw).
    requests: int
    # CPU seconds in the measured window: of this process (the clients), of the target's servers.
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    inferences: int = 0
    executions: int = 0
    queue_ns: int = 0


@dataclass
class Totals:
    """A target at one concurrency, over all repeats."""

    trials: list[Trial] = field(default_factory=list)

    @property
    def latencies(self) -> npt.NDArray[np.float64]:
        return np.array([value for trial in self.trials for value in trial.latencies])

    def rate(self) -> float:
        return len(self.latencies) / sum(trial.seconds for trial in self.trials)

    def rates(self) -> list[float]:
        return [len(trial.latencies) / trial.seconds for trial in self.trials]

    def cpu_us(self) -> tuple[float, float]:
        """CPU microseconds per request of the clients and of the servers."""
        count = len(self.latencies)
        client = sum(trial.client_cpu for trial in self.trials)
        server = sum(trial.server_cpu for trial in self.trials)
        return client / count * 1e6, server / count * 1e6

    def busy(self) -> float:
        """Fraction of the machine's CPUs that clients and servers kept busy."""
        cpu = sum(trial.client_cpu + trial.server_cpu for trial in self.trials)
        return cpu / sum(trial.seconds for trial in self.trials) / (os.cpu_count() or 1)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000

    def mean_batch(self) -> float | None:
        executions = sum(trial.executions for trial in self.trials)
        return sum(trial.inferences for trial in self.trials) / executions if executions else None

    def queue_us(self) -> float | None:
        inferences = sum(trial.inferences for trial in self.trials)
        return sum(trial.queue_ns for trial in self.trials) / inferences / 1000 if inferences else None


# --- the model -------------------------------------------------------------------------------


def train(root: Path) -> Path:
    """Trains and exports the model with the training workload, as a training pod would; returns its model directory."""
    write_classification_data(root / "data", ROWS, FEATURES)
    run = {
        "namespace": "bench",
        "name": "bench",
        "spec": {
            "data": {"source": "train.parquet", "volumeClaim": "data", "target": "label", "validationSplit": 0.1},
            "model": {"architecture": "mlp", "params": {"hiddenSizes": HIDDEN}},
            "hyperparameters": {"epochs": 2, "batchSize": 256, "learningRate": 0.001, "seed": 1},
            "output": {"volumeClaim": "models", "modelName": MODEL, "formats": ["torchscript"]},
        },
        "dataDir": str(root / "data"),
        "checkpointDir": None,
        "outputDir": str(root / "models"),
        "metricsPort": 0,
        "reportStatus": False,
    }
    config = root / "training-run.json"
    config.write_text(json.dumps(run))
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    env |= {TERMINATION_LOG_ENV: str(root / "termination-log"), **TORCHRUN_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "scaleml_workloads.training", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"training failed with code {result.returncode}:\n{result.stderr[-3000:]}")
    return root / "models" / MODEL


def serving_run(source: Path, root: Path, model_name: str, batching: dict[str, Any]) -> ServingRun:
    return ServingRun.model_validate(
        {
            "namespace": "bench",
            "name": model_name.replace("_", "-"),
            "spec": {"model": {"fromTrainingJob": "bench"}, "backend": "python", "batching": batching},
            "modelName": model_name,
            "sourceDir": str(source),
            "servingDir": str(root / "serving"),
            "healthPort": 0,
        }
    )


# --- the baseline server -----------------------------------------------------------------------

_DTYPES: Final[dict[str, type[np.generic]]] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
}
_INFER_PATH: Final = re.compile(r"/v2/models/([^/]+)(?:/versions/[0-9]+)?/infer")


def decode_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], list[npt.NDArray[Any]]]:
    """The JSON header and the input arrays of a KServe v2 request, binary tensor extension included."""
    header: dict[str, Any] = json.loads(body if header_length is None else body[:header_length])
    binary = memoryview(body)[header_length or len(body) :]
    arrays = []
    offset = 0
    for tensor in header["inputs"]:
        dtype = np.dtype(_DTYPES[tensor["datatype"]])
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is None:
            array = np.asarray(tensor["data"], dtype=dtype)
        else:
            array = np.frombuffer(binary, dtype=dtype, count=size // dtype.itemsize, offset=offset)
            offset += size
        arrays.append(array.reshape(tensor["shape"]))
    return header, arrays


def encode_response(model: str, request: dict[str, Any], name: str, output: npt.NDArray[Any]) -> tuple[bytes, int]:
    """The response body and the length of its JSON header; the output is binary unless asked as JSON."""
    requested = {entry["name"]: entry.get("parameters", {}) for entry in request.get("outputs", [])}
    binary = requested.get(name, {}).get("binary_data", request.get("parameters", {}).get("binary_data_output", False))
    datatype = next(key for key, value in _DTYPES.items() if np.dtype(value) == output.dtype)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(output.shape)}
    raw = b""
    if binary:
        raw = np.ascontiguousarray(output).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = output.ravel().tolist()
    header = {"model_name": model, "model_version": "1", "outputs": [tensor]}
    if "id" in request:
        header["id"] = request["id"]
    encoded = json.dumps(header).encode()
    return encoded + raw, len(encoded)


def serve_baseline(model_file: Path) -> None:
    """Serves the TorchScript file one request at a time on a free port, which it prints first."""
    import torch  # only this process needs it

    model = torch.jit.load(str(model_file)).eval()  # type: ignore[no-untyped-call]

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: the connection closes after each response. A keep-alive connection would hold
        # this one-at-a-time server for as long as its client keeps sending, starving the others.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._reply(200 if self.path in ("/v2/health/live", "/v2/health/ready") else 404, b"")

        def do_POST(self) -> None:
            match = _INFER_PATH.fullmatch(self.path)
            if match is None:
                self._reply(404, b"")
                return
            body = self.rfile.read(int(self.headers["Content-Length"]))
            length = self.headers.get("Inference-Header-Content-Length")
            try:
                request, arrays = decode_request(body, None if length is None else int(length))
            except (KeyError, ValueError, TypeError) as error:
                self._reply(400, json.dumps({"error": f"bad request: {error}"}).encode())
                return
            with torch.inference_mode():
                # A copy: the array views the read-only request body, which torch.from_numpy warns about.
                output = model(torch.from_numpy(arrays[0].copy())).numpy()
            response, header_length = encode_response(match[1], request, OUTPUT_NAME, output)
            self._reply(200, response, {"Inference-Header-Content-Length": str(header_length)})

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Thousands of requests a second would drown the output."""

    class OneAtATime(HTTPServer):
        # The clients connect anew for every request; with the default backlog of 5, the rest of
        # 32 connects would be dropped and retried a second later, measuring the kernel's SYN timer.
        request_queue_size = 256

    server = OneAtATime(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def process_group(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """Ends the process and everything it started (Triton's Python stubs) however the bench ends."""
    try:
        yield process
    finally:
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if process.stdout:
            process.stdout.close()


# --- clients -----------------------------------------------------------------------------------


def requests_of(target: Target, rows: npt.NDArray[np.float32]) -> Callable[[], npt.NDArray[np.float32]]:
    """A function sending one request to the target over a connection of its own; returns the output."""
    if target.protocol == "http":
        http = httpclient.InferenceServerClient(target.address, network_timeout=60)
        http_input = httpclient.InferInput(INPUT_NAME, list(rows.shape), "FP32")
        http_input.set_data_from_numpy(rows, binary_data=True)
        http_outputs = [httpclient.InferRequestedOutput(OUTPUT_NAME, binary_data=True)]

        def call_http() -> npt.NDArray[np.float32]:
            result = http.infer(target.model, [http_input], outputs=http_outputs)
            output: npt.NDArray[np.float32] = result.as_numpy(OUTPUT_NAME)
            return output

        return call_http
    grpc = grpcclient.InferenceServerClient(target.address)
    grpc_input = grpcclient.InferInput(INPUT_NAME, list(rows.shape), "FP32")
    grpc_input.set_data_from_numpy(rows)
    grpc_outputs = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]

    def call_grpc() -> npt.NDArray[np.float32]:
        result = grpc.infer(target.model, [grpc_input], outputs=grpc_outputs, client_timeout=60)
        output: npt.NDArray[np.float32] = result.as_numpy(OUTPUT_NAME)
        return output

    return call_grpc


@dataclass(frozen=True)
class TritonStats:
    """A model's counters in Triton so far."""

    inferences: int
    executions: int
    queue_ns: int
    # Executions per batch size.
    batches: dict[int, int]

    def __sub__(self, earlier: TritonStats) -> TritonStats:
        batches = {size: count - earlier.batches.get(size, 0) for size, count in self.batches.items()}
        return TritonStats(
            self.inferences - earlier.inferences,
            self.executions - earlier.executions,
            self.queue_ns - earlier.queue_ns,
            {size: count for size, count in batches.items() if count},
        )


def triton_stats(address: str, model: str) -> TritonStats:
    stats = httpclient.InferenceServerClient(address).get_inference_statistics(model)["model_stats"][0]
    return TritonStats(
        int(stats["inference_count"]),
        int(stats["execution_count"]),
        int(stats["inference_stats"]["queue"]["ns"]),
        {int(entry["batch_size"]): int(entry["compute_infer"]["count"]) for entry in stats["batch_stats"]},
    )


def group_cpu(groups: Sequence[int]) -> float:
    """CPU seconds so far of the live processes in these process groups (Triton's Python stubs included)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Fields after the parenthesised command: state, ppid, pgrp, ... utime (12th), stime (13th).
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) in groups:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load(target: Target, concurrency: int, rows: npt.NDArray[np.float32], warmup: float, seconds: float) -> Trial:
    """`concurrency` threads send requests back to back; latencies of those that end inside the window count."""
    window: list[float] = []
    opened = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    sent = [0] * concurrency
    errors: list[BaseException] = []

    def open_window() -> None:
        now = time.perf_counter()
        window.extend([now + warmup, now + warmup + seconds])
        opened.set()

    # The clock starts once every client has connected, so connecting is never measured.
    barrier = threading.Barrier(concurrency, action=open_window)

    def client(index: int) -> None:
        try:
            call = requests_of(target, rows)
            call()
            barrier.wait()
            begin, end = window
            mine = latencies[index]
            while (started := time.perf_counter()) < end:
                call()
                finished = time.perf_counter()
                sent[index] += 1
                if begin <= finished <= end:
                    mine.append(finished - started)
        except threading.BrokenBarrierError:
            pass
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    before = triton_stats(target.triton, target.model) if target.triton else None
    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(concurrency)]
    for thread in threads:
        thread.start()
    cpu: list[tuple[float, float]] = []
    while not opened.wait(0.1):
        if not any(thread.is_alive() for thread in threads):
            break
    for moment in window:
        time.sleep(max(0.0, moment - time.perf_counter()))
        cpu.append((time.process_time(), group_cpu(target.server.groups)))
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{target.name} at concurrency {concurrency} failed") from errors[0]
    trial = Trial([value for mine in latencies for value in mine], seconds, sum(sent))
    trial.client_cpu, trial.server_cpu = cpu[1][0] - cpu[0][0], cpu[1][1] - cpu[0][1]
    if target.triton and before:
        stats = triton_stats(target.triton, target.model) - before
        trial.inferences, trial.executions, trial.queue_ns = stats.inferences, stats.executions, stats.queue_ns
    return trial


# --- the bench ---------------------------------------------------------------------------------


def capture_available() -> bool:
    try:
        return importlib.util.find_spec(f"{CAPTURE_MODULE}.__main__") is not None
    except ModuleNotFoundError:
        return False


def captured_rows(directory: Path) -> tuple[int, int]:
    """Files and rows the capture proxy wrote (a file still being written counts as no rows)."""
    files = list(directory.rglob("*.parquet"))
    rows = 0
    for path in files:
        with contextlib.suppress(OSError, pa.ArrowException):
            rows += pq.read_metadata(path).num_rows
    return len(files), rows


def start_baseline(stack: contextlib.ExitStack, model_file: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    sink = stack.enter_context(log.open("wb"))
    command = [sys.executable, __file__, "--baseline", str(model_file)]
    process = stack.enter_context(
        process_group(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=sink, start_new_session=True))
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the baseline server did not start:\n{log.read_text()[-3000:]}")
    return process, int(line)


def start_triton(
    stack: contextlib.ExitStack, root: Path, log: Path, threads: int | None
) -> tuple[subprocess.Popen[bytes], tritonserver.Ports]:
    ports = tritonserver.Ports(free_port(), free_port(), free_port())
    sink = stack.enter_context(log.open("wb"))
    process = stack.enter_context(
        process_group(tritonserver.start(root / "serving", ports, root / "triton-cache", log=sink, threads=threads))
    )
    try:
        tritonserver.wait_ready(process, ports.http)
    except BaseException:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    return process, ports


def start_proxy(
    stack: contextlib.ExitStack, triton: tritonserver.Ports, directory: Path, log: Path
) -> tuple[subprocess.Popen[bytes], int, int]:
    http, grpc = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        CAPTURE_MODULE,
        "--upstream-http",
        f"127.0.0.1:{triton.http}",
        "--upstream-grpc",
        f"127.0.0.1:{triton.grpc}",
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        "0",
        "--directory",
        str(directory),
        "--sample-rate",
        str(SAMPLE_RATE),
        "--format",
        "parquet",
    ]
    sink = stack.enter_context(log.open("wb"))
    process = stack.enter_context(
        process_group(subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
    )
    return process, http, grpc


def wait_answering(target: Target, rows: npt.NDArray[np.float32], timeout: float = 60.0) -> npt.NDArray[np.float32]:
    """The target's answer to `rows`, once it gives one; raises if its server exits or stays silent."""
    deadline = time.monotonic() + timeout
    while True:
        if target.server.process.poll() is not None:
            raise RuntimeError(
                f"the server of {target.name} exited with code {target.server.process.returncode}:\n"
                + target.server.log.read_text()[-3000:]
            )
        try:
            return requests_of(target, rows)()
        except Exception:
            if time.monotonic() > deadline:
                print(target.server.log.read_text()[-3000:], file=sys.stderr)
                raise
            time.sleep(0.2)


def measure(targets: Sequence[Target], args: argparse.Namespace) -> dict[tuple[str, int], Totals]:
    rows = np.random.default_rng(1).normal(size=(BATCH, FEATURES)).astype(np.float32)
    answers = {target.name: wait_answering(target, rows) for target in targets}
    reference = answers[targets[0].name]
    for name, answer in answers.items():
        if not np.allclose(answer, reference, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"{name} answers {answer}, {targets[0].name} {reference}")
    trials = [(target, concurrency) for concurrency in args.concurrency for target in targets]
    totals = {(target.name, concurrency): Totals() for target, concurrency in trials}
    for repeat in range(args.repeats):
        # Forward, then backward: a drift linear in time then costs every trial the same in sum.
        for target, concurrency in trials if repeat % 2 == 0 else trials[::-1]:
            trial = load(target, concurrency, rows, args.warmup, args.seconds)
            totals[target.name, concurrency].trials.append(trial)
            if args.verbose:
                latencies = np.array(trial.latencies) * 1000
                print(
                    f"repeat {repeat} {target.name:22} {concurrency:3d}: {len(latencies) / trial.seconds:6.0f} req/s, "
                    f"p50 {np.percentile(latencies, 50):6.2f} ms, p99 {np.percentile(latencies, 99):6.2f} ms",
                    file=sys.stderr,
                )
    return totals


def run_bench(root: Path, args: argparse.Namespace) -> None:
    started = time.monotonic()
    source = train(root)
    version_dir = source / str(versions(source)[-1])
    trained = time.monotonic() - started
    card = ModelCard.model_validate_json((version_dir / MODEL_CARD_FILE).read_text())
    runs = [
        serving_run(source, root, MODEL, {}),
        serving_run(source, root, PREFERRED_MODEL, {"preferredBatchSizes": PREFERRED_SIZES}),
    ]
    for run in runs:
        if agent.sync(run) is None:
            raise RuntimeError(f"no version to serve in {source}")
    logs = root / "logs"
    logs.mkdir()
    # The proxy writes into its capture volume and, as in a pod, does not create it.
    captures = root / "captures"
    captures.mkdir()
    captured: tuple[int, int] | None = None
    capture_log = ""
    if args.torch_threads:
        # Through the environment, the one way into Triton's Python stubs, and alike into the baseline.
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    with contextlib.ExitStack() as servers:
        process, port = start_baseline(servers, version_dir / TORCHSCRIPT_FILE, logs / "baseline.log")
        baseline = Server(process, logs / "baseline.log", (process.pid,))
        process, ports = start_triton(servers, root, logs / "triton.log", args.torch_threads or None)
        triton = Server(process, logs / "triton.log", (process.pid,))
        http, grpc = f"127.0.0.1:{ports.http}", f"127.0.0.1:{ports.grpc}"
        targets = [
            Target("baseline http", "http", f"127.0.0.1:{port}", MODEL, None, baseline),
            Target("triton http", "http", http, MODEL, http, triton),
            Target("triton http preferred", "http", http, PREFERRED_MODEL, http, triton),
            Target("triton grpc", "grpc", grpc, MODEL, http, triton),
        ]
        with contextlib.ExitStack() as proxy_stack:
            if capture_available():
                process, proxy_http, proxy_grpc = start_proxy(proxy_stack, ports, captures, logs / "capture.log")
                proxy = Server(process, logs / "capture.log", (process.pid, triton.process.pid))
                targets += [
                    Target("proxy http", "http", f"127.0.0.1:{proxy_http}", MODEL, http, proxy),
                    Target("proxy grpc", "grpc", f"127.0.0.1:{proxy_grpc}", MODEL, http, proxy),
                ]
            before = {model: triton_stats(http, model) for model in (MODEL, PREFERRED_MODEL)}
            ready = time.monotonic() - started - trained
            totals = measure(targets, args)
            histograms = {model: (triton_stats(http, model) - before[model]).batches for model in before}
        # After the proxy has stopped: it may hold samples in memory until then.
        if any(target.name.startswith("proxy") for target in targets):
            captured = captured_rows(captures)
            capture_log = (logs / "capture.log").read_text()
    print(f"model: {_describe(card)}, trained and exported by the training workload in {trained:.0f} s")
    print(
        f"load: batch-{BATCH} requests back to back from {_either(args.concurrency)} client threads "
        f"(each its own connection, all in this process), {args.warmup:g} s warm-up + {args.seconds:g} s measured "
        f"per trial, {args.repeats} interleaved repeats; {os.cpu_count()} CPUs, torch threads per server: "
        f"{args.torch_threads or 'default'}; servers ready in {ready:.0f} s"
    )
    for run in runs:
        config = (Path(run.serving_dir) / run.model_name / TRITON_CONFIG_FILE).read_text()
        batching = [line for line in config.splitlines() if line.startswith(("max_batch_size", "dynamic_batching"))]
        print(f"triton config {run.model_name}: python backend, 1 CPU instance, {'; '.join(batching)}")
    report(targets, totals, args.concurrency)
    print("Triton's batch sizes over the whole bench (batch size x executions, most frequent first):")
    for model, histogram in histograms.items():
        common = sorted(histogram.items(), key=lambda item: -item[1])[:10]
        print(f"  {model}: " + ", ".join(f"{size}x{count}" for size, count in common))
    if captured is None:
        print(f"capture proxy: not measured, {CAPTURE_MODULE} has no __main__ in this checkout")
    else:
        proxied = sum(
            trial.requests for (name, _), total in totals.items() if name.startswith("proxy") for trial in total.trials
        )
        print(
            f"capture proxy wrote {captured[1]} rows in {captured[0]} parquet files for {proxied} requests "
            f"(sample rate {SAMPLE_RATE}: about {SAMPLE_RATE * proxied:.0f} expected)"
        )
        if not captured[1]:
            print("the capture proxy's log ends:\n" + capture_log[-2000:])
    print(f"bench took {time.monotonic() - started:.0f} s")


def _either(values: Sequence[int]) -> str:
    words = list(map(str, values))
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def _describe(card: ModelCard) -> str:
    tensors = [f"{tensor.name} {tensor.data_type} {tensor.dims}" for tensor in (*card.inputs, *card.outputs)]
    return f"MLP {HIDDEN} ({card.training.task}), {tensors[0]} -> {tensors[1]}, TorchScript"


def report(targets: Sequence[Target], totals: dict[tuple[str, int], Totals], concurrency: Sequence[int]) -> None:
    print()
    print(
        f"{'target':22} {'conc':>4} {'req/s':>8} {'(min-max)':>13} {'rows/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'mean batch':>10} {'queue us':>8} {'cpu us/req client+server':>24} {'busy':>5}"
    )
    for threads in concurrency:
        for target in targets:
            total = totals[target.name, threads]
            rates = total.rates()
            batch, queue = total.mean_batch(), total.queue_us()
            client, server = total.cpu_us()
            print(
                f"{target.name:22} {threads:4d} {total.rate():8.0f} {f'({min(rates):.0f}-{max(rates):.0f})':>13} "
                f"{total.rate() * BATCH:8.0f} {total.percentile_ms(50):7.2f} {total.percentile_ms(99):7.2f} "
                f"{'' if batch is None else f'{batch:10.2f}':>10} {'' if queue is None else f'{queue:8.0f}':>8} "
                f"{f'{client:.0f} + {server:.0f}':>24} {total.busy():5.0%}"
            )
    print()
    names = {target.name for target in targets}
    for threads in concurrency:
        baseline = totals["baseline http", threads]
        ratios = ", ".join(
            f"{name} x{totals[name, threads].rate() / baseline.rate():.2f}"
            for name in ("triton http", "triton http preferred", "triton grpc")
        )
        print(f"throughput vs baseline at concurrency {threads:2d}: {ratios}")
    for threads in concurrency:
        for protocol in ("http", "grpc"):
            if f"proxy {protocol}" not in names:
                continue
            direct, proxied = totals[f"triton {protocol}", threads], totals[f"proxy {protocol}", threads]
            overhead = [
                f"p{q} {proxied.percentile_ms(q) - direct.percentile_ms(q):+.2f} ms "
                f"(x{proxied.percentile_ms(q) / direct.percentile_ms(q):.2f})"
                for q in (50, 99)
            ]
            print(
                f"capture proxy over triton {protocol} at concurrency {threads:2d}: {', '.join(overhead)}, "
                f"throughput x{proxied.rate() / direct.rate():.2f}"
            )
    print(
        "(mean batch: Triton's inference_count / execution_count in each target's trials; queue us: Triton's "
        "queue time per request; cpu: of this process's client threads, and of the server processes (the proxy "
        "and Triton with its Python stubs); busy: of all CPUs, by both)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, metavar="MODEL_PT", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, nargs="+", default=CONCURRENCY, help="client threads per trial")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="measured seconds per trial")
    parser.add_argument("--warmup", type=float, default=WARMUP_SECONDS, help="unmeasured seconds before each trial")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="passes over all targets")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=TORCH_THREADS,
        help="intra-op threads of torch in every server (OMP_NUM_THREADS); 0: torch's default, one per core",
    )
    parser.add_argument("--verbose", action="store_true", help="print each trial as it ends, on stderr")
    args = parser.parse_args()
    if args.baseline:
        serve_baseline(args.baseline)
        return
    # Terminated like interrupted: the servers are ended by the `finally`s on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory() as scratch:
        run_bench(Path(scratch), args)


if __name__ == "__main__":
    main()
