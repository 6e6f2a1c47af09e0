"""The training loop: DDP, mixed precision, clipping, schedule, checkpoints, validation and reporting.

Every rank builds the same initial model from the seed; dropout and other randomness then draw
from seed + rank. The data order depends only on the seed and the epoch, and a checkpoint records
how far into the epoch the group got, so a resumed run takes the same batches in the same order
as an uninterrupted one (bit-identical on CPU with the same number of processes).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from scaleml_api.runtime import TrainingRun
from scaleml_workloads.training import distributed
from scaleml_workloads.training.batches import training_batches, validation_batches
from scaleml_workloads.training.checkpoint import Checkpointer, Progress, TrainingState
from scaleml_workloads.training.config import checkpoint_directory
from scaleml_workloads.training.data import TrainingData, split_rows
from scaleml_workloads.training.distributed import Topology
from scaleml_workloads.training.models import PredictionModel, Rescale, build_model, warm_start
from scaleml_workloads.training.optim import optimizer, schedule
from scaleml_workloads.training.report import ProgressReporter, Snapshot

log = logging.getLogger(__name__)

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainingResult:
    """A finished run."""

    model: PredictionModel
    progress: Progress
    train_rows: npt.NDArray[np.int64]
    validation_rows: npt.NDArray[np.int64]
    validation_metric: float | None
    parent: str
    started: datetime
    finished: datetime
    seconds: float

    @property
    def loss(self) -> float:
        return float(self.progress.history[-1]["loss"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(run: TrainingRun, data: TrainingData, topology: Topology, reporter: ProgressReporter) -> TrainingResult:
    """Train on `data` as one rank of the group and return the model (on this rank's device)."""
    spec = run.spec
    hp = spec.hyperparameters
    started_at, started = datetime.now(UTC), time.monotonic()
    device = topology.device
    train_rows, validation_rows = split_rows(data.rows, spec.data.validation_split, hp.seed)

    seed_everything(hp.seed)
    model = build_model(spec.model, data, train_rows)
    parent = warm_start(model, spec.model, Path(run.output_dir), spec.output.model_name)
    model.to(device)
    seed_everything(hp.seed + topology.rank)
    forward: nn.Module = model
    if topology.world_size > 1:
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if hp.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]

    loader, sampler = training_batches(
        data, train_rows, hp.batch_size, topology.rank, topology.world_size, hp.seed, cuda=device.type == "cuda"
    )
    steps_per_epoch = math.ceil(sampler.num_samples / hp.batch_size)
    total_steps = hp.epochs * steps_per_epoch
    optim = optimizer(model.parameters(), hp)
    state = TrainingState(
        model=model,
        optimizer=optim,
        scheduler=schedule(optim, hp, total_steps),
        scaler=torch.amp.GradScaler(device.type, enabled=spec.precision == "fp16"),
        progress=Progress(world_size=topology.world_size),
    )
    checkpoint = spec.checkpoint
    checkpointer = Checkpointer(
        checkpoint_directory(run),
        checkpoint.every_steps if checkpoint else 1,
        checkpoint.keep if checkpoint else 1,
        topology,
    )
    checkpointer.load(state)
    progress = state.progress
    # Batches the group already took in the current epoch, in this group's per-rank batches.
    skip = progress.batches_in_epoch * hp.batch_size * progress.world_size // topology.world_size
    progress.world_size = topology.world_size

    loss_of = _loss_function(spec.model.task, model)
    amp = _autocast(spec.precision, device)
    clip = hp.gradient_clip_norm
    validation_metric = progress.history[-1]["validationMetric"] if progress.history else None
    running = torch.zeros((), device=device)
    window = _Window(device)

    def fold_running_loss() -> None:
        progress.loss_sum += float(running.item())
        running.zero_()

    for epoch in range(progress.epoch, hp.epochs):
        sampler.start_epoch(epoch, skip)
        skip = 0
        model.train()
        for features, target in loader:
            features = features.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            with amp():
                output = forward(features)
            loss = loss_of(output, target)
            optim.zero_grad(set_to_none=True)
            state.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if clip > 0:
                state.scaler.unscale_(optim)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            state.scaler.step(optim)
            state.scaler.update()
            state.scheduler.step()
            running += loss.detach()
            window.add(loss.detach(), len(target))
            progress.step += 1
            progress.batches_in_epoch += 1
            progress.loss_batches += 1
            if checkpointer.due(progress.step):
                fold_running_loss()
                reporter.checkpoint_saved(checkpointer.save(state))
            if reporter.due():
                reporter.report(window.snapshot(progress, total_steps, validation_metric, topology.world_size))
        fold_running_loss()
        loss_sum, batches = distributed.all_sum([progress.loss_sum, progress.loss_batches], device)
        epoch_loss = loss_sum / max(1.0, batches)
        validation_metric = evaluate(model, data, validation_rows, spec.model.task, hp.batch_size, topology, amp)
        progress.history.append({"epoch": epoch, "loss": epoch_loss, "validationMetric": validation_metric})
        reporter.report(window.snapshot(progress, total_steps, validation_metric, topology.world_size, epoch_loss))
        progress.epoch, progress.batches_in_epoch, progress.loss_sum, progress.loss_batches = epoch + 1, 0, 0.0, 0
        if topology.leader:
            log.info("epoch %d done: loss %.4g, validation %.4g", epoch, epoch_loss, validation_metric or math.nan)

    _check_ranks_agree(model)
    return TrainingResult(
        model=model,
        progress=progress,
        train_rows=train_rows,
        validation_rows=validation_rows,
        validation_metric=validation_metric,
        parent=parent,
        started=started_at,
        finished=datetime.now(UTC),
        seconds=time.monotonic() - started,
    )


def evaluate(
    model: nn.Module,
    data: TrainingData,
    rows: npt.NDArray[np.int64],
    task: str,
    batch_size: int,
    topology: Topology,
    amp: Callable[[], contextlib.AbstractContextManager[None]],
) -> float | None:
    """Accuracy (classification) or RMSE (regression) over all validation rows, shared out between ranks."""
    if len(rows) == 0:
        return None
    model.eval()
    score = torch.zeros((), dtype=torch.float64, device=topology.device)
    count = 0
    with torch.no_grad():
        for features, target in validation_batches(data, rows, batch_size, topology.rank, topology.world_size):
            target = target.to(topology.device)
            with amp():
                output = model(features.to(topology.device))
            if task == "classification":
                score += (output.argmax(dim=-1) == target).sum()
            else:
                score += ((output.float().squeeze(-1) - target) ** 2).sum()
            count += len(target)
    total, rows_seen = distributed.all_sum([float(score.item()), count], topology.device)
    return total / rows_seen if task == "classification" else math.sqrt(total / rows_seen)


def _check_ranks_agree(model: nn.Module) -> None:
    """Fail rather than export when the ranks' parameters differ: DDP keeps them bit-identical otherwise."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    digests = distributed.gather(digest.hexdigest())
    if len(set(digests)) > 1:
        raise RuntimeError(f"the ranks finished with different parameters (SHA-256 by rank: {digests})")
    log.info("all %d ranks finished with the same parameters (SHA-256 %s)", len(digests), digests[0][:16])


def _loss_function(task: str, model: PredictionModel) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "classification":
        return lambda output, target: F.cross_entropy(output.float(), target)
    # MSE in units of the target's variance, so the loss is on the scale of a standardised target.
    assert isinstance(model.outputs, Rescale)
    variance = float(model.outputs.std) ** 2
    return lambda output, target: F.mse_loss(output.float().squeeze(-1), target) / variance


def _autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[None]]:
    dtype = _AMP_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


class _Window:
    """Loss and throughput since the previous throttled report."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.batches = 0
        self.samples = 0
        self.since = time.monotonic()

    def add(self, loss: torch.Tensor, samples: int) -> None:
        self.loss += loss
        self.batches += 1
        self.samples += samples

    def snapshot(
        self,
        progress: Progress,
        total_steps: int,
        validation_metric: float | None,
        world_size: int,
        loss: float | None = None,
    ) -> Snapshot:
        now = time.monotonic()
        if loss is None and self.batches:
            loss = float(self.loss.item()) / self.batches
        rate = self.samples * world_size / max(now - self.since, 1e-9)
        self.loss.zero_()
        self.batches, self.samples, self.since = 0, 0, now
        return Snapshot(
            epoch=progress.epoch,
            step=progress.step,
            total_steps=total_steps,
            loss=loss,
            validation_metric=validation_metric,
            samples_per_second=rate,
        )
