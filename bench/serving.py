"""Serving throughput and latency: Triton as ScaleML configures it, capture off and on, and a one-at-a-time baseline.

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
- a second Triton serving the same model with capture on, as a ModelDeployment's pod runs it: the
  python-backend model writes one request in ten (sample rate 0.1) as a trace file, in the form
  Triton's tracer writes for pytorch and onnx models (`runtime.traced_by_triton`), and the capture
  converter (`python -m scaleml_workloads.capture`) beside it turns them into parquet capture
  files; over HTTP and gRPC, against the first Triton, for what
  capture costs: the throughput ratio and the added p50 and p99 at each concurrency. Both Tritons
  run all along, but only one is loaded at a time. Once both have stopped, the rows the converter
  wrote are counted against the requests the captured Triton answered (about a tenth).

Every server runs in its own process; the clients run in this one, and all share the machine's
CPUs, so the table also gives the CPU time per request of the clients and of the servers: on a
small machine it, more than any queue, sets the throughput. Triton's own statistics give the batch
sizes its dynamic batcher formed. Targets and repeats are interleaved so that drifts of the machine
hit all alike. Run with `make bench`; `--json PATH` also writes the capture figures as JSON.

The pieces: `serving_baseline` the baseline server, `serving_load` the clients and what they
measure, `serving_report` the table; this file trains the model, starts the servers, runs the
trials and prints the results.
"""

from __future__ import annotations

import argparse
import contextlib
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
from typing import Any

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from serving_baseline import serve_baseline
from serving_load import Server, Target, load, triton_stats, wait_answering
from serving_report import Totals, capture_figures, report
from synthetic import write_classification_data

from scaleml_api.card import ModelCard
from scaleml_api.repository import MODEL_CARD_FILE, TORCHSCRIPT_FILE, TRITON_CONFIG_FILE
from scaleml_api.runtime import (
    TERMINATION_LOG_ENV,
    ServingRun,
    capture_options,
    trace_rate,
)
from scaleml_api.v1alpha1.modeldeployment import Capture
from scaleml_api.v1alpha1.pods import TORCHRUN_ENV
from scaleml_workloads.capture.files import capture_files
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
# spec.capture of the captured Triton, as a ModelDeployment would set it.
CAPTURE = Capture.model_validate({"enabled": True, "volumeClaim": "captures", "sampleRate": 0.1, "format": "parquet"})
# torch's default of one intra-op thread per core spins OpenMP threads that wait for a core this
# small machine does not have (clients and servers share it): a batch-1 request then costs
# milliseconds of CPU instead of half of one. One thread, for Triton and the baseline alike.
TORCH_THREADS = 1


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


def serving_run(
    source: Path, repository: Path, model_name: str, batching: dict[str, Any], traces: Path | None = None
) -> ServingRun:
    """The model agent's run that builds `repository`; with `traces`, capture on as CAPTURE says, into them."""
    capture = CAPTURE.model_dump(by_alias=True) if traces is not None else {}
    return ServingRun.model_validate(
        {
            "namespace": "bench",
            "name": model_name.replace("_", "-"),
            "spec": {
                "model": {"fromTrainingJob": "bench"},
                "backend": "python",
                "batching": batching,
                "capture": capture,
            },
            "modelName": model_name,
            "sourceDir": str(source),
            "servingDir": str(repository),
            "tracesDir": str(traces or ""),
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


def captured_rows(directory: Path) -> tuple[int, int]:
    """Files and rows the capture converter wrote; read once it has stopped and written its open file."""
    files = capture_files(directory)
    return len(files), sum(pq.read_metadata(path).num_rows for path in files)


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


def triton_ports() -> tritonserver.Ports:
    return tritonserver.Ports(free_port(), free_port(), free_port())


def start_triton(
    stack: contextlib.ExitStack,
    repository: Path,
    cache: Path,
    ports: tritonserver.Ports,
    log: Path,
    threads: int | None,
) -> subprocess.Popen[bytes]:
    sink = stack.enter_context(log.open("wb"))
    process = stack.enter_context(
        process_group(tritonserver.start(repository, ports, cache, log=sink, threads=threads))
    )
    try:
        tritonserver.wait_ready(process, ports.http)
    except BaseException:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    return process


def start_converter(stack: contextlib.ExitStack, traces: Path, captures: Path, log: Path) -> subprocess.Popen[bytes]:
    """The capture converter of Triton's traces in `traces`, writing into `captures`, as the sidecar of a pod runs."""
    command = [
        sys.executable,
        "-m",
        "scaleml_workloads.capture",
        "--traces",
        str(traces),
        "--directory",
        str(captures),
        *capture_options(CAPTURE),
        "--metrics-port",
        "0",
    ]
    sink = stack.enter_context(log.open("wb"))
    return stack.enter_context(
        process_group(subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True))
    )


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
    # Volumes of the pod: the model and the converter write into them and, as in a pod, do not create them.
    traces, captures = root / "traces", root / "captures"
    traces.mkdir()
    captures.mkdir()
    repository, capture_repository = root / "serving", root / "serving-capture"
    runs = [
        serving_run(source, repository, MODEL, {}),
        serving_run(source, repository, PREFERRED_MODEL, {"preferredBatchSizes": PREFERRED_SIZES}),
    ]
    capture_run = serving_run(source, capture_repository, MODEL, {}, traces)
    for run in (*runs, capture_run):
        if agent.sync(run) is None:
            raise RuntimeError(f"no version to serve in {source}")
    logs = root / "logs"
    logs.mkdir()
    if args.torch_threads:
        # Through the environment, the one way into Triton's Python stubs, and alike into the baseline.
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    threads = args.torch_threads or None
    with contextlib.ExitStack() as servers:
        process, port = start_baseline(servers, version_dir / TORCHSCRIPT_FILE, logs / "baseline.log")
        baseline = Server(process, logs / "baseline.log", (process.pid,))
        ports = triton_ports()
        process = start_triton(servers, repository, root / "triton-cache", ports, logs / "triton.log", threads)
        triton = Server(process, logs / "triton.log", (process.pid,))
        http, grpc = f"127.0.0.1:{ports.http}", f"127.0.0.1:{ports.grpc}"
        with contextlib.ExitStack() as capturing:
            # The converter starts first and, left last, stops after Triton, as in a pod: it then converts
            # the traces of Triton's last requests, and writes its open capture file.
            capture_ports = triton_ports()
            converter = start_converter(capturing, traces, captures, logs / "converter.log")
            process = start_triton(
                capturing,
                capture_repository,
                root / "triton-cache",
                capture_ports,
                logs / "triton-capture.log",
                threads,
            )
            # The converter's CPU is counted with Triton's: capture costs both.
            captured = Server(process, logs / "triton-capture.log", (process.pid, converter.pid))
            capture_http, capture_grpc = f"127.0.0.1:{capture_ports.http}", f"127.0.0.1:{capture_ports.grpc}"
            # Each direct target next to its captured one, so that the two compared meet the same machine.
            targets = [
                Target("baseline http", "http", f"127.0.0.1:{port}", MODEL, None, baseline),
                Target("triton http", "http", http, MODEL, http, triton),
                Target("capture http", "http", capture_http, MODEL, capture_http, captured),
                Target("triton http preferred", "http", http, PREFERRED_MODEL, http, triton),
                Target("triton grpc", "grpc", grpc, MODEL, http, triton),
                Target("capture grpc", "grpc", capture_grpc, MODEL, capture_http, captured),
            ]
            counted = {
                MODEL: (http, MODEL),
                PREFERRED_MODEL: (http, PREFERRED_MODEL),
                f"{MODEL} with capture": (capture_http, MODEL),
            }
            before = {label: triton_stats(*where) for label, where in counted.items()}
            ready = time.monotonic() - started - trained
            totals = measure(targets, args)
            after = {label: triton_stats(*where) for label, where in counted.items()}
        # Read once Triton, then the converter, have stopped: the last traces are converted only then.
        files, rows = captured_rows(captures)
        converter_log = (logs / "converter.log").read_text()
    histograms = {label: (after[label] - before[label]).batches for label in counted}
    # Every request the captured Triton answered, the first answers awaited and the warm-ups included.
    requests = after[f"{MODEL} with capture"].requests
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
    print(
        f"capture: a second Triton serves the model with capture on; the python-backend model writes 1 request in "
        f"{trace_rate(CAPTURE.sample_rate)} (sample rate {CAPTURE.sample_rate:g}) as a trace file, and the "
        f"converter beside it writes {CAPTURE.format} captures"
    )
    report(targets, totals, args.concurrency, BATCH)
    print("Triton's batch sizes over the whole bench (batch size x executions, most frequent first):")
    for label, histogram in histograms.items():
        common = sorted(histogram.items(), key=lambda item: -item[1])[:10]
        print(f"  {label}: " + ", ".join(f"{size}x{count}" for size, count in common))
    print(
        f"the capture converter wrote {rows} rows in {files} {CAPTURE.format} files for {requests} requests "
        f"(batch-{BATCH}) to Triton with capture: {rows / max(requests, 1):.2%} "
        f"(sample rate {CAPTURE.sample_rate:g}: about {CAPTURE.sample_rate * requests * BATCH:.0f} expected)"
    )
    if converter.returncode != 0 or not rows:
        print(f"the converter exited with code {converter.returncode}; its log ends:\n" + converter_log[-2000:])
    print(f"bench took {time.monotonic() - started:.0f} s")
    if args.json:
        figures: dict[str, Any] = {**capture_figures(totals, args.concurrency)}
        figures |= {"captured_rows": rows, "capture_requests": requests}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


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
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the figures of capture over direct Triton as JSON"
    )
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
