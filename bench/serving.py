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

The pieces: `serving_baseline` the baseline server, `serving_load` the clients and what they
measure, `serving_report` the table; this file trains the model, starts the servers, runs the
trials and prints the results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from serving_baseline import serve_baseline
from serving_load import Server, Target, load, triton_stats, wait_answering
from serving_report import Totals, report
from synthetic import write_classification_data

from scaleml_api.card import ModelCard
from scaleml_api.repository import MODEL_CARD_FILE, TORCHSCRIPT_FILE, TRITON_CONFIG_FILE
from scaleml_api.runtime import TERMINATION_LOG_ENV, TORCHRUN_ENV, ServingRun
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
    report(targets, totals, args.concurrency, BATCH)
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
