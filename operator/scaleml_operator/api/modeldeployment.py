"""ModelDeployment: its status; the spec lives in the workload contract, which the serving pods share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field

from scaleml_operator.api.conditions import Conditions
from scaleml_workloads.contract.base import ApiModel
from scaleml_workloads.contract.serving import ModelDeploymentSpec

__all__ = ["MODEL_VERSION_ANNOTATION", "TRITON_CONTAINER", "ModelDeploymentSpec", "ModelDeploymentStatus", "Waiting"]

# On the Triton Deployment and its pod template: the model version the pods serve.
MODEL_VERSION_ANNOTATION: Final = "scaleml.dev/model-version"
# The Triton container of a serving pod, whose failures say why a model does not load.
TRITON_CONTAINER: Final = "triton"


@dataclass(frozen=True)
class Waiting:
    """Why a ModelDeployment has nothing to serve yet: the reason of its Ready condition, and a message."""

    reason: str
    message: str


DeploymentPhase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]


class Endpoints(ApiModel):
    """In-cluster URLs of the inference service."""

    http: str = Field(default="", description="KServe v2 HTTP endpoint.")
    grpc: str = Field(default="", description="KServe v2 gRPC endpoint.")


class ModelDeploymentStatus(ApiModel):
    """The observed state of a ModelDeployment."""

    phase: DeploymentPhase | None = Field(default=None, description="Pending, Progressing, Ready, Degraded or Failed.")
    conditions: Conditions
    observed_generation: int | None = Field(default=None, ge=0, description="Generation last acted on.")
    replicas: int | None = Field(default=None, ge=0, description="Triton pods that exist.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Triton pods that are ready.")
    served_version: int | None = Field(default=None, ge=1, description="Model version being served.")
    endpoints: Endpoints | None = Field(default=None, description="Where to send inference requests.")
    selector: str | None = Field(default=None, description="Label selector of the pods (for the scale subresource).")
