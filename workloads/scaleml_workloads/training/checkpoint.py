"""Periodic checkpoints of everything a resumed run needs to continue as if it had never stopped.

A checkpoint holds the model, optimizer, scheduler and grad-scaler states, the training progress
(epoch, step, batches consumed in the epoch, the epoch's running loss, the history) and every
rank's RNG states. Rank 0 writes it to a temporary file in the same directory, fsyncs it and
renames it into place, so a file named `step-*.pt` is always complete; the newest `keep` stay.
Loading walks back from the newest file and skips any that cannot be read (a disk that lost a
write, a truncated copy), so a bad file costs one interval, not the run.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scaleml_workloads.training import distributed
from scaleml_workloads.training.distributed import Topology

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step-([0-9]+)\.pt$")
_FORMAT = 1


@dataclass
class Progress:
    """Where training stands."""

    epoch: int = 0
    step: int = 0
    # Batches each rank has taken in the current epoch, and the group size that took them.
    batches_in_epoch: int = 0
    world_size: int = 1
    # The current epoch's training loss so far.
    loss_sum: float = 0.0
    loss_batches: int = 0
    # One entry per finished epoch: {"epoch", "loss", "validationMetric"}.
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainingState:
    """The stateful pieces of a run, restored in place by `Checkpointer.load`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    progress: Progress


class Checkpointer:
    """Saves every `every_steps` optimizer steps into `directory` (None: never) and resumes from the newest."""

    def __init__(self, directory: Path | None, every_steps: int, keep: int, topology: Topology) -> None:
        self.directory = directory
        self.every_steps = every_steps
        self.keep = keep
        self.topology = topology
        if directory is not None and topology.leader:
            directory.mkdir(parents=True, exist_ok=True)

    def due(self, step: int) -> bool:
        return self.directory is not None and step % self.every_steps == 0

    def save(self, state: TrainingState) -> float:
        """Write a checkpoint of `state` (a collective: every rank calls it); returns the seconds it took."""
        assert self.directory is not None
        started = time.monotonic()
        rng = distributed.gather(_rng_state(self.topology.device))
        if self.topology.leader:
            payload = {
                "format": _FORMAT,
                "model": state.model.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict(),
                "progress": asdict(state.progress),
                "rng": rng,
            }
            path = self.directory / f"step-{state.progress.step:09d}.pt"
            _write_atomically(payload, path)
            self._prune()
        return time.monotonic() - started

    def load(self, state: TrainingState) -> bool:
        """Restore `state` from the newest readable checkpoint; False when there is none. Every rank calls it."""
        if self.directory is None:
            return False
        payload = None
        if self.topology.leader:
            payload = self._newest_readable()
        chosen = distributed.broadcast(None if payload is None else payload["path"])
        if chosen is None:
            return False
        if payload is None:
            payload = _read(Path(chosen))
        state.model.load_state_dict(payload["model"])
        state.optimizer.load_state_dict(payload["optimizer"])
        state.scheduler.load_state_dict(payload["scheduler"])
        state.scaler.load_state_dict(payload["scaler"])
        state.progress = Progress(**payload["progress"])
        ranks = payload["rng"]
        if len(ranks) == self.topology.world_size:
            _restore_rng(ranks[self.topology.rank])
        log.info(
            "resumed from %s: epoch %d, step %d, %d batches into the epoch",
            chosen,
            state.progress.epoch,
            state.progress.step,
            state.progress.batches_in_epoch,
        )
        return True

    def _files(self) -> list[tuple[int, Path]]:
        assert self.directory is not None
        found = [(int(match[1]), path) for path in self.directory.iterdir() if (match := _NAME.fullmatch(path.name))]
        return sorted(found, reverse=True)

    def _newest_readable(self) -> dict[str, Any] | None:
        assert self.directory is not None
        for leftover in self.directory.glob(".step-*.tmp"):
            # A temporary file is what a writer left when it died; it is never resumed from.
            leftover.unlink(missing_ok=True)
        for _, path in self._files():
            try:
                payload = _read(path)
            except Exception as error:  # any unreadable file is skipped, whatever broke it
                log.warning("skipping checkpoint %s, which cannot be read: %s", path, error)
                continue
            payload["path"] = str(path)
            return payload
        return None

    def _prune(self) -> None:
        for _, path in self._files()[self.keep :]:
            path.unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any]:
    # weights_only: a checkpoint is data (tensors, numbers, lists, dicts), never code to unpickle.
    payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != _FORMAT:
        raise ValueError(f"unknown checkpoint format {payload.get('format')!r}")
    return payload


def _write_atomically(payload: dict[str, Any], path: Path) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _rng_state(device: torch.device) -> dict[str, Any]:
    # Plain bytes and lists rather than tensors: all_gather_object fails to unpickle tensors (torch 2.15).
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {**numpy_state["state"], "key": numpy_state["state"]["key"].tolist()}},
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).numpy().tobytes()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    key = np.array(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**numpy_state, "state": {**numpy_state["state"], "key": key}})
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if "cuda" in state:
        torch.cuda.set_rng_state(_byte_tensor(state["cuda"]))


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)
