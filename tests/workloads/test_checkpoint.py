"""Checkpoints: written whole, pruned to the newest, and a damaged newest one is passed over for the one before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scaleml_workloads.training.checkpoint import Checkpointer, Progress, TrainingState
from scaleml_workloads.training.distributed import Topology

pytestmark = pytest.mark.workloads


def _state(seed: int) -> TrainingState:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    return TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step)),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        progress=Progress(),
    )


def _advance(state: TrainingState, step: int) -> None:
    state.model(torch.randn(8, 4)).sum().backward()
    state.optimizer.step()
    state.scheduler.step()
    state.progress.step = step
    state.progress.batches_in_epoch = step


def _parameters(state: TrainingState) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in state.model.state_dict().items()}


def test_a_truncated_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path: Path, process_group: Topology) -> None:
    checkpointer = Checkpointer(tmp_path, every_steps=10, keep=3, topology=process_group)
    state = _state(0)
    saved = {}
    for step in (10, 20):
        _advance(state, step)
        checkpointer.save(state)
        saved[step] = (_parameters(state), torch.get_rng_state())
    newest = tmp_path / "step-000000020.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    # What a writer killed mid-write leaves behind.
    leftover = tmp_path / ".step-000000030.pt.0123.tmp"
    leftover.write_bytes(b"half a checkpoint")
    resumed = _state(1)
    torch.manual_seed(99)

    assert checkpointer.load(resumed)

    assert resumed.progress.step == 10
    parameters, rng = saved[10]
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, parameters[name]), name
    assert torch.equal(torch.get_rng_state(), rng)
    assert resumed.scheduler.last_epoch == 1
    assert not leftover.exists()


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path, process_group: Topology) -> None:
    checkpointer = Checkpointer(tmp_path, every_steps=10, keep=2, topology=process_group)
    state = _state(0)
    for step in (10, 20, 30, 40):
        _advance(state, step)
        checkpointer.save(state)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["step-000000030.pt", "step-000000040.pt"]


def test_there_is_nothing_to_resume_without_a_readable_checkpoint(tmp_path: Path, process_group: Topology) -> None:
    checkpointer = Checkpointer(tmp_path, every_steps=10, keep=2, topology=process_group)
    (tmp_path / "step-000000010.pt").write_bytes(b"not a checkpoint")
    state = _state(0)
    before = _parameters(state)

    assert not checkpointer.load(state)
    assert not Checkpointer(None, every_steps=10, keep=2, topology=process_group).load(state)

    assert state.progress == Progress()
    for name, tensor in state.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
