"""Operator-wide settings: `scaleml operator` puts them in kopf's memo, where handlers read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_WORKLOAD_IMAGE: Final = "scaleml/workloads:0.1.0"
# Triton 2.51, the server version the tests run (nvidia-pytriton 0.7 ships it).
DEFAULT_TRITON_IMAGE: Final = "nvcr.io/nvidia/tritonserver:24.10-py3"


@dataclass(frozen=True)
class OperatorConfig:
    workload_image: str = DEFAULT_WORKLOAD_IMAGE
    triton_image: str = DEFAULT_TRITON_IMAGE
    # Modules whose custom model code, and images whose jobs, a DriftMonitor may retrain; none by
    # default (see builders.retraining.AllowedCode).
    retrain_entrypoint_prefixes: tuple[str, ...] = ()
    retrain_image_prefixes: tuple[str, ...] = ()
    # Threads that run reconciles' API calls at once (and connections to the API server).
    workers: int = 16
    # Every object's status is recomputed from the caches once per period (see handlers.resync).
    resync_seconds: float = 60.0
    # Whether the operator serves every namespace (else those given by --namespace).
    cluster_wide: bool = True
    # Growth over the start-up size (MiB) above which a process whose objects are nearly all gone is
    # replaced by a fresh one (memory.worth_replacing); 0: never.
    recycle_above_mib: float = 32.0
