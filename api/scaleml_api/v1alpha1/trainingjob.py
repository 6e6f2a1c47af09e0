"""TrainingJob: the spec users write (and the training pods read), its status, and how kubectl shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal, Self

from pydantic import Field, StringConstraints, ValidationError, model_validator

from scaleml_api.base import (
    ApiModel,
    ColumnName,
    ListType,
    NestedFieldError,
    ObjectName,
    OptionalImage,
    Quantity,
    Rule,
    VolumePath,
    not_above,
)
from scaleml_api.conditions import CREATING, POD_START_REASONS, Conditions, Vocabulary
from scaleml_api.evaluation import EvaluationSummary
from scaleml_api.kind import AGE_COLUMN, PHASE_COLUMN, Kind, PrinterColumn
from scaleml_api.v1alpha1.architectures import PARAM_SHAPE, Architecture, Params, parse_params
from scaleml_api.v1alpha1.pods import EnvList, PodMetadata, Scheduling

ExportFormat = Literal["torchscript", "onnx"]
ProfileSample = Literal["rows", "none"]
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)]


class ModelSpec(ApiModel):
    """The network to train."""

    architecture: Architecture = Field(
        default="mlp",
        description="mlp (tabular), cnn or resnet (images), transformer (sequences), or custom.",
    )
    task: Literal["classification", "regression"] = Field(
        default="classification",
        description="classification (cross-entropy over the target's classes) or regression (MSE).",
    )
    params: Params = Field(
        default={},
        description="Architecture parameters, e.g. {hiddenSizes: [64, 64], dropout: 0.1} for mlp; "
        "keyword arguments of the entrypoint for custom. Each is named like a Python identifier (at most 64 "
        f"characters) and is {PARAM_SHAPE}. Checked against the architecture by the operator before any pod "
        "starts.",
    )
    entrypoint: Annotated[
        str,
        StringConstraints(
            pattern=r"^$|^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
            max_length=256,
        ),
    ] = Field(
        default="",
        description='custom only: "package.module:function", a function that returns a torch.nn.Module.',
    )
    init_from: Annotated[
        str,
        StringConstraints(
            pattern=r"^$|^latest$|^[1-9][0-9]*$|^[A-Za-z0-9][A-Za-z0-9_.-]*/(latest|[1-9][0-9]*)$", max_length=140
        ),
    ] = Field(
        default="",
        description="Warm start (fine-tuning) from an exported version in the output repository: "
        'a version number, "latest", or "MODEL/VERSION" for another model there. Empty: random initialisation.',
    )

    rules = (
        Rule(
            cel="(self.architecture == 'custom') == (self.entrypoint != '')",
            message="entrypoint is required for architecture custom and only allowed there",
            check=lambda m: (m.architecture == "custom") == (m.entrypoint != ""),
            field_path=".entrypoint",
        ),
    )

    @model_validator(mode="after")
    def _params_match_architecture(self) -> Self:
        try:
            parse_params(self.architecture, self.params)
        except ValidationError as error:
            raise NestedFieldError(
                [(("params", *problem["loc"]), problem["msg"]) for problem in error.errors(include_url=False)]
            ) from None
        return self


class DataChecks(ApiModel):
    """Checks run on the data before training starts; a failure ends the job with a clear message."""

    max_missing_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Largest allowed fraction of missing values in any column."
    )
    min_rows: int = Field(default=1, ge=1, description="Fewest rows the data set may have.")


class DataSpec(ApiModel):
    """Where the training data lives and how to read it."""

    source: VolumePath = Field(description="Path of the data file inside the data volume.")
    volume_claim: ObjectName = Field(description="PersistentVolumeClaim that holds the data.")
    format: Literal["parquet", "csv", "npz"] = Field(default="parquet", description="parquet, csv or npz.")
    target: ColumnName = Field(description="Column (or npz array) to predict.")
    features: Annotated[list[ColumnName], ListType()] = Field(
        default=[],
        max_length=4096,
        description="Feature columns; empty means every column but the target.",
    )
    validation_split: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Fraction of rows held out for validation, split by seed."
    )
    checks: DataChecks = Field(default_factory=DataChecks, description="Validation before training starts.")

    rules = (
        Rule(
            cel="!(self.target in self.features)",
            message="target must not also be a feature",
            check=lambda d: d.target not in d.features,
            field_path=".features",
        ),
    )


class Hyperparameters(ApiModel):
    """Optimisation settings."""

    epochs: int = Field(default=10, ge=1, le=100_000, description="Passes over the training data.")
    batch_size: int = Field(default=256, ge=1, le=1_048_576, description="Samples per step on each process.")
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0, description="Peak learning rate.")
    optimizer: Literal["adamw", "adam", "sgd"] = Field(default="adamw", description="adamw, adam or sgd.")
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="Decoupled weight decay.")
    scheduler: Literal["constant", "cosine", "linear"] = Field(
        default="cosine", description="Learning-rate schedule after warm-up: constant, cosine or linear decay."
    )
    warmup_steps: int = Field(default=0, ge=0, description="Steps of linear warm-up.")
    gradient_clip_norm: float = Field(
        default=1.0, ge=0.0, description="Clip the global gradient norm to this value; 0 turns clipping off."
    )
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="Seed for initialisation, split and shuffling.")
    compile: bool = Field(default=False, description="Compile the model with torch.compile.")


class Resources(ApiModel):
    """How many pods and processes, and what each pod gets."""

    workers: int = Field(default=1, ge=1, le=1024, description="Pods (nodes) in the torch.distributed group.")
    procs_per_worker: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Processes per pod. Defaults to gpusPerWorker, or 1 without GPUs; "
        "with GPUs it must equal gpusPerWorker (one process per GPU).",
    )
    gpus_per_worker: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per pod.")
    cpu: Quantity = Field(default="1", description="CPU request (and limit) per pod.")
    memory: Quantity = Field(default="2Gi", description="Memory request (and limit) per pod.")

    rules = (
        Rule(
            cel="!has(self.procsPerWorker) || self.gpusPerWorker == 0 || self.procsPerWorker == self.gpusPerWorker",
            message="procsPerWorker must equal gpusPerWorker when GPUs are requested",
            check=lambda r: (
                r.procs_per_worker is None or r.gpus_per_worker == 0 or r.procs_per_worker == r.gpus_per_worker
            ),
            field_path=".procsPerWorker",
        ),
    )

    @property
    def processes_per_worker(self) -> int:
        if self.procs_per_worker is not None:
            return self.procs_per_worker
        return self.gpus_per_worker or 1


class ElasticPolicy(ApiModel):
    """Elastic membership through torchrun: the group runs on with any size in [minWorkers, maxWorkers]."""

    min_workers: int = Field(
        default=1, ge=1, le=1024, description="Fewest pods the group may shrink to when pods fail or are preempted."
    )
    max_workers: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Largest group the rendezvous admits (torchrun --nnodes MIN:MAX). The Job runs "
        "resources.workers pods, so the group never grows past that.",
    )
    max_restarts: int = Field(
        default=3, ge=0, le=100, description="Times torchrun restarts the group after a failure or membership change."
    )

    rules = (not_above("minWorkers", "maxWorkers"),)


class CheckpointSpec(ApiModel):
    """Periodic checkpoints, so that a restarted pod resumes instead of starting over."""

    volume_claim: ObjectName = Field(description="PersistentVolumeClaim for checkpoints.")
    every_steps: int = Field(default=500, ge=1, description="Save a checkpoint every this many optimizer steps.")
    keep: int = Field(default=3, ge=1, le=100, description="Number of newest checkpoints to keep.")


class OutputSpec(ApiModel):
    """Where the trained model is exported, as a new version of a Triton model repository."""

    volume_claim: ObjectName = Field(description="PersistentVolumeClaim holding the Triton model repository.")
    model_name: ModelName = Field(description="Model directory in the repository; versions are numbered inside it.")
    formats: Annotated[list[ExportFormat], ListType()] = Field(
        default=["torchscript"],
        min_length=1,
        max_length=2,
        description="Serialised forms to export: torchscript and/or onnx.",
    )
    profile_sample: ProfileSample = Field(
        default="rows",
        description="What the reference profile (profile.json, next to each exported version, which drift "
        "monitors compare with) keeps of the training data besides aggregates (counts, moments, quantiles at 1% "
        "steps, histograms, category frequencies): rows, a random sample of up to 5000 rows with their raw "
        "values; or none, no row at all. With none a DriftMonitor compares numeric features with the quantiles "
        "and skips its multivariate (MMD) test, saying so in its report.",
    )


# The Job's ttlSecondsAfterFinished is an int32: a larger value would pass here and be refused with the Job.
MAX_TTL_SECONDS: Final = 2**31 - 1


class RunPolicy(ApiModel):
    """Lifecycle of the underlying batch Job."""

    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=100,
        description="Times each worker may fail and be replaced before the job fails. Without elastic, one "
        "worker's failure restarts the whole group (the others exit 75 and are replaced too): this is how many "
        "times the group may fail and restart. A worker preempted, evicted or drained is not counted; exit "
        "codes 1, 2, 126 and 127 fail the job at once. A started job keeps the value it started with.",
    )
    active_deadline_seconds: int | None = Field(default=None, ge=1, description="Wall-clock limit for the whole job.")
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=MAX_TTL_SECONDS,
        description="Delete the finished TrainingJob, and with it its pods, after this many seconds.",
    )
    suspend: bool = Field(default=False, description="Suspend the job: running pods are stopped, none are created.")


class EvaluationSpec(ApiModel):
    """How a trained version is evaluated before it is exported, beyond the validation metric.

    Every version gets its overall metrics and, for maxRegression, the metrics of the previous
    versions on its validation rows; `sensitiveFeatures` adds a per-group audit of each.
    """

    sensitive_features: Annotated[list[ColumnName], ListType()] = Field(
        default=[],
        max_length=8,
        description="Columns (or 1-D npz arrays) whose groups are audited: the task metric per group with a "
        "bootstrap interval and, for classification, the demographic parity difference, equal opportunity "
        "difference and disparate impact ratio. A column that is not among the features is read for the audit "
        "only, never fed to the model. Each value is a group (at most 100 per column: bin a numeric column first).",
    )
    positive_label: Annotated[str, StringConstraints(max_length=256)] = Field(
        default="",
        description="Classification: the label of the favourable outcome the fairness measures count, as the "
        'target holds it (e.g. "1", "true", "approved"). Empty: the second of two classes in sorted order; '
        "a model with more classes then gets per-group metrics but no fairness measures.",
    )
    min_group_size: int = Field(
        default=30,
        ge=1,
        le=1_000_000,
        description="Fewest validation rows a group needs to be judged: smaller groups are reported as too small "
        "and left out of the gaps (and so out of the gates).",
    )
    bootstrap_samples: int = Field(
        default=200, ge=0, le=10_000, description="Resamples for the 95% intervals of the per-group metrics; 0: none."
    )
    compare_versions: int = Field(
        default=3,
        ge=0,
        le=20,
        description="How many of the model's previous versions (the newest) are evaluated on this version's "
        "validation rows, for the ModelDeployment's maxRegression gate.",
    )
    intended_use: Annotated[str, StringConstraints(max_length=4096)] = Field(
        default="", description="What the model is for and what it must not be used for, for the model card."
    )


class TrainingJobSpec(ApiModel):
    """The desired training run."""

    image: OptionalImage = Field(default="", description="Workload image; empty selects the operator's default.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="The network to train.")
    data: DataSpec = Field(description="The training data.")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters, description="Optimisation settings.")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        default="fp32", description="fp32, or automatic mixed precision in fp16 (CUDA) or bf16."
    )
    resources: Resources = Field(default_factory=Resources, description="Pods, processes and their resources.")
    elastic: ElasticPolicy | None = Field(default=None, description="Elastic membership; absent: fixed size.")
    checkpoint: CheckpointSpec | None = Field(default=None, description="Checkpointing; absent: none.")
    output: OutputSpec = Field(description="Where the trained model is exported.")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec, description="Per-group audit and comparison with earlier versions."
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Retries, deadlines and suspension.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Node selection and queueing.")
    pod_metadata: PodMetadata = Field(default_factory=PodMetadata, description="Extra labels and annotations.")
    env: EnvList

    rules = (
        Rule(
            cel="!has(self.elastic) || (self.elastic.minWorkers <= self.resources.workers "
            "&& self.resources.workers <= self.elastic.maxWorkers)",
            message="resources.workers must lie within [elastic.minWorkers, elastic.maxWorkers]",
            check=lambda s: s.elastic is None or s.elastic.min_workers <= s.resources.workers <= s.elastic.max_workers,
            field_path=".resources.workers",
        ),
        Rule(
            cel="self.precision != 'fp16' || self.resources.gpusPerWorker > 0",
            message="fp16 mixed precision needs GPUs (resources.gpusPerWorker > 0); use bf16 on CPU",
            check=lambda s: s.precision != "fp16" or s.resources.gpus_per_worker > 0,
            field_path=".precision",
        ),
        Rule(
            cel="!self.evaluation.sensitiveFeatures.exists(f, f == self.data.target)",
            message="evaluation.sensitiveFeatures must not name the target column",
            check=lambda s: s.data.target not in s.evaluation.sensitive_features,
            field_path=".evaluation.sensitiveFeatures",
        ),
    )


Phase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
# Where a TrainingJob ends: no Job runs it again.
FINISHED_PHASES: Final = ("Succeeded", "Failed")


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
    restarts: int | None = Field(
        default=None,
        ge=0,
        description="Times the process group restarted: each worker that failed on its own (a crash, OOMKilled, a "
        "preemption) counts once, the peers it interrupted not at all, and a failure that failed the job is no "
        "restart.",
    )
    model_version: int | None = Field(default=None, ge=1, description="Version directory written on success.")
    evaluation: EvaluationSummary | None = Field(
        default=None,
        description="The exported version's evaluation, written with modelVersion: metrics, per-group gaps and "
        "earlier versions on the same rows (the model card has every group).",
    )
    gpu_hours: float | None = Field(default=None, ge=0.0, description="GPU time used so far, in hours.")
    start_time: datetime | None = Field(default=None, description="When the first worker started.")
    completion_time: datetime | None = Field(default=None, description="When the job finished.")


TRAINING_JOB = Kind(
    kind="TrainingJob",
    plural="trainingjobs",
    short_name="tj",
    description="A PyTorch training run on one or many pods that exports a new version of a Triton model.",
    spec=TrainingJobSpec,
    status=TrainingJobStatus,
    columns=(
        PHASE_COLUMN,
        PrinterColumn("Workers", ".spec.resources.workers", "integer", "Pods in the process group."),
        PrinterColumn("Epoch", ".status.progress.epoch", "integer", "Current epoch."),
        PrinterColumn("Step", ".status.progress.step", "integer", "Optimizer steps taken."),
        PrinterColumn("Total", ".status.progress.totalSteps", "integer", "Optimizer steps planned."),
        PrinterColumn("Loss", ".status.progress.loss", "number", "Latest training loss."),
        PrinterColumn("Version", ".status.modelVersion", "integer", "Exported model version."),
        AGE_COLUMN,
    ),
    # Pods of an indexed Job are named <job>-<index>-<5 chars>, and must fit a DNS label.
    max_name_length=48,
)


VOCABULARY: Final = Vocabulary(TRAINING_JOB.kind)

CREATED: Final = VOCABULARY.condition("Created", "The workers' Job exists.")
RUNNING: Final = VOCABULARY.condition("Running", "Worker pods are running.")
SUCCEEDED: Final = VOCABULARY.condition("Succeeded", "Every worker finished and the model was exported.")
FAILED: Final = VOCABULARY.condition("Failed", "The Job failed for good; the message has the workers' own words.")
SUSPENDED: Final = VOCABULARY.condition("Suspended", "The Job is suspended (runPolicy.suspend, or a queue).")
RESTARTING: Final = VOCABULARY.condition("Restarting", "A worker failed and the process group is restarting.")

VOCABULARY.reason(CREATING, "The workers' Job does not exist yet.", on=(CREATED,))
JOB_CREATED: Final = VOCABULARY.reason(
    "JobCreated", "The Job exists; the message says how many workers.", on=(CREATED,)
)
COMPLETED: Final = VOCABULARY.reason("Completed", "Every worker finished.", on=(SUCCEEDED,))
NOT_FINISHED: Final = VOCABULARY.reason("NotFinished", "The Job has not finished yet.", on=(SUCCEEDED,))
WORKERS_RUNNING: Final = VOCABULARY.reason(
    "WorkersRunning",
    "Enough workers run for training to go on (every one; with `elastic`, at least `minWorkers`); the message "
    "counts them.",
    on=(RUNNING,),
)
WORKERS_PENDING: Final = VOCABULARY.reason(
    "WorkersPending",
    "The Job runs but not enough of its workers do, and none says why: they are being scheduled, pull "
    "their image or run the `check` init container. The message counts them.",
    on=(RUNNING,),
)
WORKERS_NOT_CREATED: Final = VOCABULARY.reason(
    "FailedCreate",
    "The Job controller cannot create worker pods: a ResourceQuota of the namespace (CPU, memory, GPUs, pods), a "
    "LimitRange or an admission policy refuses them. The message has the API server's words, from the Job's "
    "FailedCreate Events; the Job keeps trying, and the workers start once the pods are allowed.",
    on=(RUNNING,),
)
# Why a worker pod cannot start, in the scheduler's or the kubelet's own reason; the message names the pod
# and has their words. Another reason of theirs is given as WorkersPending, with it in the message.
POD_START_PROBLEMS: Final = {
    VOCABULARY.reason(
        reason,
        f"A worker pod cannot start: {meaning} The message names the pod and has the scheduler's or kubelet's words.",
        on=(RUNNING,),
    )
    for reason, meaning in POD_START_REASONS.items()
}
# When the Job does not run, Running's reason is the phase ("Failed" also says why it did not succeed).
for _phase in ("Succeeded", "Suspended"):
    VOCABULARY.reason(_phase, f"Not running: the TrainingJob is {_phase}.", on=(RUNNING,))
VOCABULARY.reason("Failed", "Not running, and never will: the Job failed.", on=(RUNNING, SUCCEEDED))
JOB_FAILED: Final = VOCABULARY.reason(
    "JobFailed",
    "The Job failed without a reason of its own (else its controller's reason is given: DeadlineExceeded, "
    "PodFailurePolicy, or BackoffLimitExceeded).",
    on=(FAILED,),
)
BACKOFF_LIMIT_EXCEEDED: Final = VOCABULARY.reason(
    "BackoffLimitExceeded",
    "A worker failed more times than runPolicy.backoffLimit allows; the message names the failure that "
    "restarted the group last (an OOMKilled worker with its memory limit, a crash, a disruption).",
    on=(FAILED,),
)
NO_FAILURE: Final = VOCABULARY.reason("NoFailure", "Nothing failed.", on=(FAILED,))
JOB_SUSPENDED: Final = VOCABULARY.reason("JobSuspended", "The Job is suspended.", on=(SUSPENDED,))
NOT_SUSPENDED: Final = VOCABULARY.reason("NotSuspended", "The Job is not suspended.", on=(SUSPENDED,))
WORKER_FAILED: Final = VOCABULARY.reason(
    "WorkerFailed",
    "A worker pod failed; the message names the worker whose failure restarted the group, and why (its "
    "termination message, OOMKilled with its memory limit, or its disruption).",
    on=(RESTARTING,),
)
NOT_RESTARTING: Final = VOCABULARY.reason("NotRestarting", "No worker failed since the group formed.", on=(RESTARTING,))

TRAINING_STARTED: Final = VOCABULARY.event(
    "TrainingStarted",
    "Normal",
    "Enough workers run for training to go on: the phase became Running (once a run, or again after a "
    "suspension; not while pods wait to be scheduled or to start). Posted before TrainingSucceeded if the "
    "run was never seen running.",
)
TRAINING_SUCCEEDED: Final = VOCABULARY.event(
    "TrainingSucceeded", "Normal", "Training finished; the message names the exported version."
)
TRAINING_FAILED: Final = VOCABULARY.event("TrainingFailed", "Warning", "Training failed; the message says why.")
TRAINING_SUSPENDED: Final = VOCABULARY.event("TrainingSuspended", "Normal", "The Job was suspended.")
WORKERS_NOT_CREATED_EVENT: Final = VOCABULARY.event(
    WORKERS_NOT_CREATED,
    "Warning",
    "The Job controller cannot create worker pods (the Running condition's FailedCreate): posted when it starts.",
)
