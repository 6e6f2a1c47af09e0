"""The three kinds ScaleML serves: names, models and how kubectl shows them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from scaleml_operator.api.driftmonitor import DriftMonitorSpec, DriftMonitorStatus
from scaleml_operator.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from scaleml_operator.api.trainingjob import TrainingJobSpec, TrainingJobStatus
from scaleml_workloads.contract.base import GROUP, VERSION

CATEGORY = "scaleml"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_name: str
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    columns: tuple[PrinterColumn, ...]
    # Longest metadata.name: child object names derive from it (pods add "-N-xxxxx").
    max_name_length: int = 63
    scale: bool = False

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def group_version(self) -> tuple[str, str, str]:
        """(group, version, plural), the way kopf and the dynamic client address the kind."""
        return GROUP, VERSION, self.plural


_PHASE = PrinterColumn("Phase", ".status.phase", description="Lifecycle phase.")
_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")

TRAINING_JOB = Kind(
    kind="TrainingJob",
    plural="trainingjobs",
    short_name="tj",
    description="A PyTorch training run on one or many pods that exports a new version of a Triton model.",
    spec=TrainingJobSpec,
    status=TrainingJobStatus,
    columns=(
        _PHASE,
        PrinterColumn("Workers", ".spec.resources.workers", "integer", "Pods in the process group."),
        PrinterColumn("Epoch", ".status.progress.epoch", "integer", "Current epoch."),
        PrinterColumn("Step", ".status.progress.step", "integer", "Optimizer steps taken."),
        PrinterColumn("Total", ".status.progress.totalSteps", "integer", "Optimizer steps planned."),
        PrinterColumn("Loss", ".status.progress.loss", "number", "Latest training loss."),
        PrinterColumn("Version", ".status.modelVersion", "integer", "Exported model version."),
        _AGE,
    ),
    # Pods of an indexed Job are named <job>-<index>-<5 chars>, and must fit a DNS label.
    max_name_length=48,
)

MODEL_DEPLOYMENT = Kind(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_name="md",
    description="A Triton Inference Server deployment serving a model repository, with autoscaling.",
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    columns=(
        _PHASE,
        PrinterColumn("Model", ".spec.model.fromTrainingJob", description="Source TrainingJob."),
        PrinterColumn("Served", ".status.servedVersion", "integer", "Model version being served."),
        PrinterColumn("Ready", ".status.readyReplicas", "integer", "Ready Triton pods."),
        PrinterColumn("Replicas", ".status.replicas", "integer", "Triton pods."),
        _AGE,
    ),
    max_name_length=52,
    scale=True,
)

DRIFT_MONITOR = Kind(
    kind="DriftMonitor",
    plural="driftmonitors",
    short_name="dm",
    description="Compares captured live traffic with the training data and can trigger retraining.",
    spec=DriftMonitorSpec,
    status=DriftMonitorStatus,
    columns=(
        PrinterColumn("Target", ".spec.target.modelDeployment", description="Monitored ModelDeployment."),
        PrinterColumn("Drift", ".status.driftDetected", "boolean", "Whether the last window drifted."),
        PrinterColumn("Score", ".status.driftScore", "number", "Overall drift score of the last window."),
        PrinterColumn("Retrains", ".status.retrainsTriggered", "integer", "TrainingJobs created."),
        PrinterColumn("Last-Check", ".status.lastCheckTime", "date", "When the last window was tested."),
        _AGE,
    ),
    max_name_length=52,
)

KINDS: tuple[Kind, ...] = (TRAINING_JOB, MODEL_DEPLOYMENT, DRIFT_MONITOR)
