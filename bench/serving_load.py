"""The load generator of the serving bench: closed-loop clients against a target, and what its servers spent.

`load` runs one trial: N threads, each sending batch requests back to back over a connection of
its own, their latencies counted inside a measured window, with the CPU time of the clients (this
process) and of the target's server processes, and Triton's own counters of the model that answers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from scaleml_workloads.export.formats import INPUT_NAME, OUTPUT_NAME

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
    # CPU seconds in the measured window: of this process (the clients), of the target's servers.
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    inferences: int = 0
    executions: int = 0
    queue_ns: int = 0


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

    # Requests answered, and the batch rows they held.
    requests: int
    inferences: int
    executions: int
    queue_ns: int
    # Executions per batch size.
    batches: dict[int, int]

    def __sub__(self, earlier: TritonStats) -> TritonStats:
        batches = {size: count - earlier.batches.get(size, 0) for size, count in self.batches.items()}
        return TritonStats(
            self.requests - earlier.requests,
            self.inferences - earlier.inferences,
            self.executions - earlier.executions,
            self.queue_ns - earlier.queue_ns,
            {size: count for size, count in batches.items() if count},
        )


def triton_stats(address: str, model: str) -> TritonStats:
    stats = httpclient.InferenceServerClient(address).get_inference_statistics(model)["model_stats"][0]
    return TritonStats(
        int(stats["inference_stats"]["success"]["count"]),
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
    trial = Trial([value for mine in latencies for value in mine], seconds)
    trial.client_cpu, trial.server_cpu = cpu[1][0] - cpu[0][0], cpu[1][1] - cpu[0][1]
    if target.triton and before:
        stats = triton_stats(target.triton, target.model) - before
        trial.inferences, trial.executions, trial.queue_ns = stats.inferences, stats.executions, stats.queue_ns
    return trial


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
