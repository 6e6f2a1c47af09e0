"""DriftMonitor: its status; the spec lives in the workload contract, which the monitor shares."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from scaleml_operator.api.conditions import Conditions
from scaleml_workloads.contract.base import ApiModel
from scaleml_workloads.contract.monitoring import DriftMonitorSpec

__all__ = ["DriftMonitorSpec", "DriftMonitorStatus"]


class DriftMonitorStatus(ApiModel):
    """The observed state of a DriftMonitor."""

    conditions: Conditions
    observed_generation: int | None = Field(default=None, ge=0, description="Generation last acted on.")
    last_check_time: datetime | None = Field(default=None, description="When the last window was tested.")
    drift_detected: bool | None = Field(default=None, description="Whether the last window drifted.")
    drift_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Overall drift score of the last window, from 0 to 1."
    )
    drift_since: datetime | None = Field(
        default=None, description="When the current run of drifted windows began; empty while there is no drift."
    )
    reference_version: int | None = Field(
        default=None, ge=1, description="The model version whose training-data profile is the reference."
    )
    drifted_features: list[str] = Field(
        default=[], max_length=4096, description="Features that drifted in the last window."
    )
    window_size: int | None = Field(default=None, ge=0, description="Rows in the last window.")
    consecutive_drifted_windows: int | None = Field(default=None, ge=0, description="Drifted windows in a row.")
    retrains_triggered: int | None = Field(default=None, ge=0, description="TrainingJobs created so far.")
    last_retrain_job: str | None = Field(default=None, description="Name of the last TrainingJob created.")
    last_retrain_time: datetime | None = Field(default=None, description="When it was created.")
