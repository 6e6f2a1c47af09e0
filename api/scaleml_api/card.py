"""The model card written into each version directory: what was trained, on what, how well, and its tensors."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from scaleml_api.base import ApiModel
from scaleml_api.evaluation import Evaluation
from scaleml_api.profile import Calibration, TensorSpec
from scaleml_api.runtime import Lineage
from scaleml_api.v1alpha1.architectures import Architecture
from scaleml_api.v1alpha1.trainingjob import Hyperparameters

Label = str | int | float | bool


class EpochMetrics(ApiModel):
    """The end of one epoch."""

    epoch: int = Field(description="Epoch number, from 0.")
    loss: float = Field(description="Mean training loss over the epoch's batches, averaged over ranks.")
    validation_metric: float | None = Field(description="Accuracy or RMSE on the validation rows; None without any.")


class Metrics(ApiModel):
    """How well the model trained."""

    validation_metric_name: Literal["accuracy", "rmse"]
    loss: float = Field(
        description="Final training loss: cross-entropy, or for regression the MSE divided by the target's variance."
    )
    validation_metric: float | None
    history: list[EpochMetrics]
    feature_importance: dict[str, float] = Field(
        default={},
        description="Per feature, its permutation importance on the validation rows (as in the profile: accuracy "
        "lost, or RMSE gained); empty without validation rows or for a model over token ids.",
    )
    calibration: Calibration | None = Field(
        default=None,
        description="Classifiers: the temperature that calibrates the confidence, with the validation accuracy and "
        "the calibration error (ECE) before and after it. None for regression or without validation rows.",
    )


class DataSummary(ApiModel):
    """The data the model was trained on."""

    source: str
    format: Literal["parquet", "csv", "npz"]
    sha256: str
    rows: int
    training_rows: int
    validation_rows: int
    target: str
    features: list[str]
    categories: dict[str, list[str]] = Field(
        description="Per categorical feature, its categories in code order: the model takes the code."
    )


class TrainingSummary(ApiModel):
    """What the trainer knows about the run; the exporter adds the rest of the card."""

    job: str = Field(description="NAMESPACE/NAME of the TrainingJob.")
    task: Literal["classification", "regression"]
    architecture: Architecture
    params: dict[str, Any]
    entrypoint: str
    hyperparameters: Hyperparameters
    precision: Literal["fp32", "fp16", "bf16"]
    parent: str = Field(description='The version warm-started from, as "MODEL/VERSION"; empty for none.')
    data: DataSummary
    metrics: Metrics
    world_size: int = Field(description="Processes in the group at the end of training.")
    device: str = Field(description="cuda or cpu.")
    steps: int = Field(description="Optimizer steps taken.")
    started: datetime
    finished: datetime
    training_seconds: float = Field(description="From the start of this process's training to its end.")


class ModelCard(ApiModel):
    """model_card.json. The version is the name of the directory that holds it."""

    model_name: str
    created: datetime
    training: TrainingSummary
    labels: list[Label] = Field(description="Classification: the original label of each output index.")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_kind: Literal["logits", "value"] = Field(
        description="logits (classification, before softmax) or value (regression, in the target's units)."
    )
    files: list[str] = Field(description="Files of the version directory.")
    export_seconds: float
    torch_version: str
    python_version: str
    intended_use: str = Field(default="", description="What the model is for and not for (spec.evaluation).")
    lineage: Lineage | None = Field(
        default=None, description="The drift episode whose retraining produced this version; None for a job by hand."
    )
    previous_version: int | None = Field(
        default=None, description="The newest version of the model when this one was exported: the one it replaces."
    )
    evaluation: Evaluation | None = Field(
        default=None,
        description="Metrics overall and per group of each sensitive feature, the gaps, and earlier versions on "
        "the same rows; None without validation rows.",
    )


class CardTensors(ApiModel):
    """The tensors of a model card: all that serving reads, so that cards may grow without breaking it."""

    model_config = ConfigDict(extra="ignore")

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
