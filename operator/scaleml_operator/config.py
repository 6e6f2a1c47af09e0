"""Operator-wide settings: `scaleml operator` puts them in kopf's memo, where handlers read them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DEFAULT_WORKLOAD_IMAGE: Final = "scaleml/workloads:0.1.0"


@dataclass(frozen=True)
class OperatorConfig:
    workload_image: str = DEFAULT_WORKLOAD_IMAGE
