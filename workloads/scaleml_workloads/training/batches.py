"""Batches of the training data for one rank: sharded, shuffled by epoch and seed, resumable mid-epoch.

The whole data set is in memory (every rank reads the file), so a batch is one gather of row
indices from a tensor rather than a collate of single samples; that keeps the input pipeline off
the profile even for small models.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from scaleml_workloads.training.data import TrainingData

Batch = tuple[torch.Tensor, torch.Tensor]


class Rows(Dataset[Batch]):
    """Some rows of the data, fetched a batch of indices at a time.

    The data is shared, not copied: a batch's row numbers are looked up first, then gathered.
    """

    def __init__(self, data: TrainingData, rows: npt.NDArray[np.int64]) -> None:
        self.features = torch.from_numpy(data.features)
        self.target = torch.from_numpy(data.target)
        self.rows = torch.from_numpy(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: torch.Tensor) -> Batch:
        rows = self.rows[index]
        return self.features[rows], self.target[rows]


class ResumableSampler(DistributedSampler[int]):
    """A DistributedSampler that can start an epoch part-way through, and gives its indices as one tensor.

    The epoch's permutation depends only on the seed and the epoch, not on the number of ranks,
    and each rank takes every world-size-th index of it. Skipping the first `skip` indices of
    every rank therefore skips the first `skip * world` indices of the permutation: a resumed run
    sees the same order as an uninterrupted one, even after the group changed size.

    `epoch_indices` computes DistributedSampler's indices (same permutation, padding and
    sharding) with tensor operations: building them as Python ints costs several times the
    gathering of a small model's batches.
    """

    def __init__(self, dataset: Rows, rank: int, world_size: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.rows = len(dataset)
        self.skip = 0

    def start_epoch(self, epoch: int, skip: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def epoch_indices(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        indices = torch.randperm(self.rows, generator=generator)
        padding = self.total_size - len(indices)
        if padding:
            indices = torch.cat([indices, indices.repeat(math.ceil(padding / len(indices)))[:padding]])
        return indices[self.rank : self.total_size : self.num_replicas][self.skip :]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


class IndexBatches(Sampler[torch.Tensor]):
    """The sampler's indices in batches of index tensors."""

    def __init__(self, sampler: ResumableSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(torch.split(self.sampler.epoch_indices(), self.batch_size))

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)


def training_batches(
    data: TrainingData,
    rows: npt.NDArray[np.int64],
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    *,
    cuda: bool,
) -> tuple[DataLoader[Batch], ResumableSampler]:
    """The training loader of one rank, and its sampler (to start each epoch)."""
    dataset = Rows(data, rows)
    sampler = ResumableSampler(dataset, rank, world_size, seed)
    # On CPU a gather from memory is faster in-process than through worker processes; on CUDA a
    # couple of workers fill pinned buffers while the GPU computes.
    workers = min(2, max(1, (os.cpu_count() or 1) // 4)) if cuda else 0
    loader = DataLoader(
        dataset,
        sampler=IndexBatches(sampler, batch_size),
        batch_size=None,
        # The dataset returns whole batches of tensors already: nothing to collate or convert.
        collate_fn=_as_is,
        num_workers=workers,
        pin_memory=cuda,
        persistent_workers=workers > 0,
        # A generator of its own, so starting an epoch draws nothing from the global RNG, which
        # a checkpoint saves and dropout uses.
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, sampler


def _as_is(batch: Any) -> Any:
    return batch


def validation_batches(
    data: TrainingData, rows: npt.NDArray[np.int64], batch_size: int, rank: int, world_size: int
) -> Iterator[Batch]:
    """This rank's share of the validation rows, in order; every row belongs to exactly one rank."""
    shard = np.array_split(rows, world_size)[rank]
    for start in range(0, len(shard), batch_size):
        chunk = shard[start : start + batch_size]
        yield torch.from_numpy(data.features[chunk]), torch.from_numpy(data.target[chunk])
