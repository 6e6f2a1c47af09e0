"""The report of the serving bench: the trials of each target summed up, and the table that compares them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from serving_load import Target, Trial

PROTOCOLS: Final = ("http", "grpc")
# The figures of capture over direct Triton, by protocol, then by concurrency (a string, as in JSON).
THROUGHPUT_RATIO: Final = "capture_throughput_ratio"
ADDED_P50: Final = "capture_added_p50_ms"
ADDED_P99: Final = "capture_added_p99_ms"
# What capture may cost: this share of the throughput at this many clients, this much p50 at one.
GOAL_CONCURRENCY: Final = 32
GOAL_RATIO: Final = 0.95
GOAL_ADDED_P50_MS: Final = 0.1


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


def capture_figures(
    totals: dict[tuple[str, int], Totals], concurrency: Sequence[int]
) -> dict[str, dict[str, dict[str, float]]]:
    """Triton with capture on ("capture <protocol>") over Triton alone ("triton <protocol>"): throughput ratio,
    added p50 and p99 in milliseconds."""
    figures: dict[str, dict[str, dict[str, float]]] = {
        name: {protocol: {} for protocol in PROTOCOLS} for name in (THROUGHPUT_RATIO, ADDED_P50, ADDED_P99)
    }
    for protocol in PROTOCOLS:
        for threads in concurrency:
            direct, captured = totals[f"triton {protocol}", threads], totals[f"capture {protocol}", threads]
            key = str(threads)
            figures[THROUGHPUT_RATIO][protocol][key] = round(captured.rate() / direct.rate(), 4)
            for name, q in ((ADDED_P50, 50), (ADDED_P99, 99)):
                figures[name][protocol][key] = round(captured.percentile_ms(q) - direct.percentile_ms(q), 4)
    return figures


def report(
    targets: Sequence[Target], totals: dict[tuple[str, int], Totals], concurrency: Sequence[int], rows_per_request: int
) -> None:
    """The table of every target at every concurrency (`rows_per_request` rows each), then ratios between them:
    Triton over the baseline, and Triton with capture over Triton alone."""
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
                f"{total.rate() * rows_per_request:8.0f} {total.percentile_ms(50):7.2f} {total.percentile_ms(99):7.2f} "
                f"{'' if batch is None else f'{batch:10.2f}':>10} {'' if queue is None else f'{queue:8.0f}':>8} "
                f"{f'{client:.0f} + {server:.0f}':>24} {total.busy():5.0%}"
            )
    print()
    for threads in concurrency:
        baseline = totals["baseline http", threads]
        ratios = ", ".join(
            f"{name} x{totals[name, threads].rate() / baseline.rate():.2f}"
            for name in ("triton http", "triton http preferred", "triton grpc")
        )
        print(f"throughput vs baseline at concurrency {threads:2d}: {ratios}")
    figures = capture_figures(totals, concurrency)
    for threads in concurrency:
        for protocol in PROTOCOLS:
            key = str(threads)
            print(
                f"capture over triton {protocol} at concurrency {threads:2d}: "
                f"throughput x{figures[THROUGHPUT_RATIO][protocol][key]:.3f}, "
                f"p50 {figures[ADDED_P50][protocol][key]:+.3f} ms, p99 {figures[ADDED_P99][protocol][key]:+.3f} ms"
            )
    if GOAL_CONCURRENCY in concurrency and 1 in concurrency:
        for protocol in PROTOCOLS:
            ratio = figures[THROUGHPUT_RATIO][protocol][str(GOAL_CONCURRENCY)]
            added = figures[ADDED_P50][protocol]["1"]
            met = ratio >= GOAL_RATIO and added < GOAL_ADDED_P50_MS
            print(
                f"capture goal over {protocol} (x{GOAL_RATIO} of the throughput at {GOAL_CONCURRENCY} clients, under "
                f"{GOAL_ADDED_P50_MS} ms added p50 at 1): {'met' if met else 'missed'} (x{ratio:.3f}, {added:+.3f} ms)"
            )
    print(
        "(mean batch: Triton's inference_count / execution_count in each target's trials; queue us: Triton's "
        "queue time per request; cpu: of this process's client threads, and of the server processes (Triton with "
        "its Python stubs, and for capture the converter too); busy: of all CPUs, by both)"
    )
