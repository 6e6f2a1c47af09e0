"""The report of the serving bench: the trials of each target summed up, and the table that compares them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from serving_load import Target, Trial


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


def report(
    targets: Sequence[Target], totals: dict[tuple[str, int], Totals], concurrency: Sequence[int], rows_per_request: int
) -> None:
    """The table of every target at every concurrency (`rows_per_request` rows each), then ratios between them."""
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
