"""The process group: torchrun's environment when it is there, a group of one otherwise.

A group always exists, so the training loop has one code path; only the model is left unwrapped
by DistributedDataParallel when the group has a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from scaleml_api.v1alpha1.pods import TORCHRUN_ENV

log = logging.getLogger(__name__)

# Long enough for the slowest rank to read a large data set before the first collective.
_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the group."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def leader(self) -> bool:
        """Rank 0: the one process that writes checkpoints, exports and reports."""
        return self.rank == 0


def join() -> Topology:
    """Join the process group: NCCL with one GPU per local rank when CUDA is available, gloo on CPU."""
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # Still so in torch 2.15: see TORCHRUN_ENV.
        log.warning("torchrun shares its rendezvous store: a restart will fail; set %s", TORCHRUN_ENV)
    if "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend, timeout=_TIMEOUT, device_id=device if device.type == "cuda" else None)
    else:
        # Run without torchrun: an in-process store is enough for a group of one.
        store = dist.HashStore()  # type: ignore[attr-defined] # exported at run time, missing from the stubs
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=_TIMEOUT)
    return Topology(rank, local_rank, world_size, device)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums over the group."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(value) for value in tensor.tolist()]


def gather(value: Any) -> list[Any]:
    """Every rank's `value`, by rank, on every rank."""
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
