"""TrainingJob: its status; the spec lives in the workload contract, which the training pods share."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from scaleml_operator.api.conditions import Conditions
from scaleml_workloads.contract.base import ApiModel
from scaleml_workloads.contract.training import TrainingJobSpec

__all__ = ["TrainingJobSpec", "TrainingJobStatus"]


Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]


class Progress(ApiModel):
    """Training progress reported by rank 0."""

    epoch: int | None = Field(default=None, ge=0, description="Current epoch (0-based).")
    step: int | None = Field(default=None, ge=0, description="Optimizer steps taken.")
    total_steps: int | None = Field(default=None, ge=0, description="Optimizer steps the run will take.")
    loss: float | None = Field(default=None, description="Latest training loss.")
    validation_metric: float | None = Field(
        default=None, description="Latest validation metric: accuracy (classification) or RMSE (regression)."
    )
    samples_per_second: float | None = Field(default=None, ge=0.0, description="Training throughput, all ranks.")


class TrainingJobStatus(ApiModel):
    """The observed state of a TrainingJob."""

    phase: Phase | None = Field(default=None, description="Pending, Running, Succeeded, Failed or Suspended.")
    conditions: Conditions
    observed_generation: int | None = Field(default=None, ge=0, description="Generation last acted on.")
    progress: Progress | None = Field(default=None, description="Training progress.")
    restarts: int | None = Field(default=None, ge=0, description="Times the process group restarted.")
    model_version: int | None = Field(default=None, ge=1, description="Version directory written on success.")
    gpu_hours: float | None = Field(default=None, ge=0.0, description="GPU time used so far, in hours.")
    start_time: datetime | None = Field(default=None, description="When the first worker started.")
    completion_time: datetime | None = Field(default=None, description="When the job finished.")
