"""Training batches: DistributedSampler's shards and order, and a mid-epoch start skipping exactly what was taken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from scaleml_workloads.training.batches import ResumableSampler, Rows
from scaleml_workloads.training.data import TrainingData

pytestmark = pytest.mark.workloads


def _rows(count: int) -> Rows:
    data = TrainingData(
        source=Path("in-memory"),
        features=np.zeros((count, 1), np.float32),
        target=np.zeros(count, np.int64),
        feature_names=("x",),
        categories={},
        labels=(0, 1),
        target_name="y",
    )
    return Rows(data, np.arange(count))


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("rows", [7, 12, 1000])
def test_each_rank_gets_the_indices_distributed_sampler_gives_it(world_size: int, rows: int) -> None:
    dataset = _rows(rows)
    for rank in range(world_size):
        reference: DistributedSampler[int] = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, seed=5, shuffle=True
        )
        reference.set_epoch(3)
        sampler = ResumableSampler(dataset, rank, world_size, seed=5)
        sampler.start_epoch(3, skip=0)

        assert list(sampler) == list(reference)


def test_skipping_resumes_the_same_permutation_after_the_group_changed_size() -> None:
    dataset = _rows(1200)
    whole = ResumableSampler(dataset, 0, 1, seed=9)
    whole.start_epoch(2, skip=0)
    # Two ranks took 100 indices each; a single process goes on from index 200 of the permutation.
    resumed = ResumableSampler(dataset, 0, 1, seed=9)
    resumed.start_epoch(2, skip=200)

    assert torch.equal(resumed.epoch_indices(), whole.epoch_indices()[200:])
    assert len(resumed) == 1000
