"""Throughput of the ScaleML training loop against a minimal hand-written PyTorch loop, and the cost of checkpoints.

Both loops train the same MLP (built by ScaleML's model builder, so the modules are identical) on
the same synthetic tabular data, with the same optimizer, batch size and number of steps, in this
one process on CPU. Repeats are interleaved so that drifts of the machine hit both alike; the
medians are printed. Run with `make bench`.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from prometheus_client import REGISTRY
from synthetic import write_classification_data

from scaleml_api.runtime import TrainingRun
from scaleml_workloads.training import distributed
from scaleml_workloads.training.data import TrainingData, load_run_data, split_rows
from scaleml_workloads.training.distributed import Topology
from scaleml_workloads.training.loop import seed_everything, train
from scaleml_workloads.training.models import build_model
from scaleml_workloads.training.report import ProgressReporter

ROWS = 200_000
FEATURES = 32
BATCH = 1024
EPOCHS = 3
HIDDEN = [64, 64]
CHECKPOINT_EVERY = 100
REPEATS = 9


def training_run(root: Path, *, checkpoints: bool) -> TrainingRun:
    spec = {
        "data": {"source": "train.parquet", "volumeClaim": "data", "target": "label", "validationSplit": 0.0},
        "model": {"architecture": "mlp", "params": {"hiddenSizes": HIDDEN}},
        "hyperparameters": {
            "epochs": EPOCHS,
            "batchSize": BATCH,
            "learningRate": 0.001,
            "optimizer": "adamw",
            "scheduler": "constant",
            "gradientClipNorm": 0.0,
            "seed": 1,
        },
        "output": {"volumeClaim": "models", "modelName": "bench"},
    }
    if checkpoints:
        spec["checkpoint"] = {"volumeClaim": "checkpoints", "everySteps": CHECKPOINT_EVERY, "keep": 1}
    return TrainingRun.model_validate(
        {
            "namespace": "bench",
            "name": "bench",
            "spec": spec,
            "dataDir": str(root / "data"),
            "checkpointDir": str(root / "checkpoints" / str(time.monotonic_ns())),
            "outputDir": str(root / "models"),
            "metricsPort": 0,
            "reportStatus": False,
        }
    )


def scaleml(run: TrainingRun, data: TrainingData, topology: Topology) -> float:
    """Seconds for ScaleML's loop, from the call to the trained model (set-up included)."""
    reporter = ProgressReporter(None, leader=True, metrics_port=0)
    started = time.perf_counter()
    train(run, data, topology, reporter)
    return time.perf_counter() - started


def hand_written(run: TrainingRun, data: TrainingData) -> float:
    """Seconds for the plainest loop that does the same work: shuffle, slice, forward, backward, step."""
    started = time.perf_counter()
    rows, _ = split_rows(data.rows, 0.0, 1)
    seed_everything(1)
    model = build_model(run.spec.model, data, rows)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.001)
    features, target = torch.from_numpy(data.features), torch.from_numpy(data.target)
    generator = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(data.rows, generator=generator)
        for start in range(0, data.rows, BATCH):
            batch = order[start : start + BATCH]
            loss = F.cross_entropy(model(features[batch]), target[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    return time.perf_counter() - started


def _checkpoint_seconds() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("scaleml_training_checkpoint_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("scaleml_training_checkpoint_seconds_sum") or 0.0
    return count, total


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    topology = distributed.join()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_classification_data(root / "data", ROWS, FEATURES)
        data = load_run_data(training_run(root, checkpoints=False))
        samples = EPOCHS * data.rows
        timings: dict[str, list[float]] = {"scaleml": [], "hand": [], "checkpointed": []}
        variants: dict[str, Callable[[], float]] = {
            "scaleml": lambda: scaleml(training_run(root, checkpoints=False), data, topology),
            "hand": lambda: hand_written(training_run(root, checkpoints=False), data),
            "checkpointed": lambda: scaleml(training_run(root, checkpoints=True), data, topology),
        }
        variants["hand"]()  # warm-up: first-touch allocations and lazy initialisation
        names = list(variants)
        for repeat in range(REPEATS):
            # Rotate the order, so that no variant always runs right after the same other one.
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                timings[name].append(variants[name]())
        count, total = _checkpoint_seconds()
        sizes = [path.stat().st_size for path in (root / "checkpoints").rglob("step-*.pt")]
    distributed.leave()

    # Best and median of the repeats: other load on the machine only ever slows a run down.
    best = {name: min(values) for name, values in timings.items()}
    median = {name: statistics.median(values) for name, values in timings.items()}
    print(f"data: {ROWS} rows x {FEATURES} features, MLP {HIDDEN}, batch {BATCH}, {EPOCHS} epochs, {REPEATS} repeats")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("                         best samples/s   median samples/s")
    for name, label in (("scaleml", "scaleml loop"), ("hand", "hand-written loop")):
        print(f"{label:24} {samples / best[name]:16.0f} {samples / median[name]:18.0f}")
    print(
        f"{'ratio scaleml/hand':24} {best['hand'] / best['scaleml']:16.3f} {median['hand'] / median['scaleml']:18.3f}"
    )
    print(f"checkpoint: {total / count:.4f} s and {statistics.mean(sizes) / 1e6:.3f} MB each (mean of {count:.0f})")
    overhead = {
        name: values["checkpointed"] / values["scaleml"] - 1 for name, values in (("best", best), ("median", median))
    }
    print(
        f"checkpoint overhead at everySteps={CHECKPOINT_EVERY}: "
        f"{overhead['best']:+.2%} best, {overhead['median']:+.2%} median"
    )


if __name__ == "__main__":
    main()
