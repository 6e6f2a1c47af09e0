"""ModelDeployment: the spec users write (and the serving pods read), its status, and how kubectl shows it."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import Field
from pydantic.alias_generators import to_snake

from scaleml_api.base import (
    DURATION_PATTERN,
    ApiModel,
    Duration,
    IntOrString,
    ListType,
    ObjectName,
    OptionalImage,
    OptionalObjectName,
    Quantity,
    Rule,
    duration_seconds,
    not_above,
    quantity_value,
)
from scaleml_api.conditions import POD_START_REASONS, READY, Conditions, Vocabulary
from scaleml_api.kind import AGE_COLUMN, PHASE_COLUMN, Kind, PrinterColumn
from scaleml_api.v1alpha1.autoscaling import MetricSpec
from scaleml_api.v1alpha1.trainingjob import ModelName

Backend = Literal["pytorch", "onnx", "python"]
CaptureFormat = Literal["parquet", "npz"]


class RepositoryRef(ApiModel):
    """A Triton model repository on a volume."""

    volume_claim: ObjectName = Field(description="PersistentVolumeClaim holding the model repository.")
    model_name: ModelName = Field(description="Model directory inside the repository.")


def _valid_version(version: int | str) -> bool:
    return version == "latest" if isinstance(version, str) else version >= 1


class ModelSource(ApiModel):
    """Which model to serve: the output of a TrainingJob, or a repository given directly."""

    from_training_job: OptionalObjectName = Field(
        default="", description="Serve what this TrainingJob (same namespace) exports."
    )
    repository: RepositoryRef | None = Field(default=None, description="Serve this repository instead.")
    version: IntOrString = Field(
        default="latest", description='"latest" (follow new versions) or a version number to pin.'
    )

    rules = (
        Rule(
            cel="(self.fromTrainingJob != '') != has(self.repository)",
            message="exactly one of fromTrainingJob and repository must be set",
            check=lambda m: (m.from_training_job != "") != (m.repository is not None),
        ),
        Rule(
            cel="type(self.version) == string ? self.version == 'latest' : self.version >= 1",
            message='version must be "latest" or a number >= 1',
            check=lambda m: _valid_version(m.version),
            field_path=".version",
        ),
    )


class Batching(ApiModel):
    """Triton dynamic batching."""

    max_batch_size: int = Field(
        default=64, ge=0, le=65536, description="Largest batch Triton forms; 0 turns batching off."
    )
    preferred_batch_sizes: Annotated[list[Annotated[int, Field(ge=1)]], ListType()] = Field(
        default=[],
        max_length=16,
        description="Batch sizes the scheduler aims for; each at most maxBatchSize.",
    )
    max_queue_delay_microseconds: int = Field(
        default=500, ge=0, le=10_000_000, description="How long a request may wait for a batch to fill."
    )

    rules = (
        Rule(
            cel="self.preferredBatchSizes.all(s, s <= self.maxBatchSize)",
            message="each of preferredBatchSizes must be at most maxBatchSize",
            check=lambda b: all(s <= b.max_batch_size for s in b.preferred_batch_sizes),
            field_path=".preferredBatchSizes",
        ),
    )


class Instances(ApiModel):
    """Triton instance_group: model copies per server."""

    count: int = Field(default=1, ge=1, le=64, description="Model instances per server.")
    kind: Literal["auto", "gpu", "cpu"] = Field(
        default="auto", description="gpu (KIND_GPU), cpu (KIND_CPU), or auto: gpu when resources.gpus > 0."
    )


class ServingResources(ApiModel):
    """What each Triton pod gets."""

    gpus: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per pod.")
    cpu: Quantity = Field(default="1", description="CPU request per pod (and limit).")
    memory: Quantity = Field(default="2Gi", description="Memory request (and limit) per pod.")


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) for the Triton Deployment. Absent: fixed replicas."""

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    target_cpu_utilization: int = Field(
        default=70,
        alias="targetCPUUtilization",
        ge=0,
        le=100,
        description="Target average CPU utilisation, percent of the request; 0 for none (then metrics names "
        "at least one).",
    )
    metrics: list[MetricSpec] = Field(
        default=[],
        max_length=16,
        description="Extra autoscaling/v2 MetricSpecs (Pods or External), e.g. Triton queue time per "
        "compute time through a Prometheus adapter.",
    )

    rules = (
        not_above("minReplicas", "maxReplicas"),
        # An HPA without metrics scales on 80% CPU, Kubernetes' default: not what 0 asked for.
        Rule(
            cel="self.targetCPUUtilization > 0 || size(self.metrics) > 0",
            message="targetCPUUtilization 0 needs at least one of metrics",
            check=lambda a: a.target_cpu_utilization > 0 or bool(a.metrics),
            field_path=".targetCPUUtilization",
        ),
    )


# A size in bytes: a positive whole number, with a binary (Ki, Mi, Gi, ...) or decimal (k, M, G, ...) suffix.
_BYTES_PATTERN: Final = r"^[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"


# The least maxAge: a capture file is completed within a minute of its first row.
MIN_CAPTURE_AGE: Final = "1m"


def not_shorter(field: str, minimum: str, name: str = "") -> Rule:
    """The rule that the Duration field `field` (camelCase) is at least `minimum`, blaming it (as `name`)."""
    attribute = to_snake(field)
    return Rule(
        # The API server evaluates the rule even when the field fails its pattern, and duration() of
        # such a value ("999999h999999h999999h") is an error blaming the section: the pattern's own
        # error names the field.
        cel=f"!self.{field}.matches('{DURATION_PATTERN}') || duration(self.{field}) >= duration('{minimum}')",
        message=f"{name or field} must be at least {minimum}",
        check=lambda model: duration_seconds(getattr(model, attribute)) >= duration_seconds(minimum),
        field_path=f".{field}",
    )


class CaptureRetention(ApiModel):
    """How long captured requests stay on the capture volume; the capture converters delete the rest."""

    max_age: Duration = Field(
        default="168h",
        description="Capture files whose first row is older than this are deleted (within a minute), e.g. "
        '"168h" (7 days), "24h", "30m". Lowering it erases older captures: the serving pods roll, and each new '
        "capture converter deletes them as it starts.",
    )
    max_bytes: Quantity = Field(
        default="10Gi",
        description="The ModelDeployment's capture files together take at most about this much (a whole number with "
        "an optional suffix, e.g. 10Gi, 500M): past it the oldest are deleted (within a minute; its pods may exceed "
        "it by the files they write meanwhile). Keep the sum over the ModelDeployments that share a claim below the "
        "volume's size.",
    )

    rules = (
        not_shorter("maxAge", MIN_CAPTURE_AGE),
        Rule(
            cel=f"type(self.maxBytes) == int ? self.maxBytes > 0 : self.maxBytes.matches('{_BYTES_PATTERN}')",
            message="maxBytes must be a positive whole number of bytes, with an optional suffix (e.g. 10Gi, 500M)",
            check=lambda r: re.fullmatch(_BYTES_PATTERN, r.max_bytes) is not None,
            field_path=".maxBytes",
        ),
    )

    @property
    def max_byte_count(self) -> int:
        return int(quantity_value(self.max_bytes))


class Capture(ApiModel):
    """Capture of a sample of live requests and responses, for drift monitoring.

    The captured inputs and outputs are user data. They stay on the capture volume, in the directory
    named after the ModelDeployment, for at most `retention.maxAge` and `retention.maxBytes` while it
    exists (deleting it leaves the directory as it is: its converters, which apply the retention, go
    with its pods). To erase them: lower `retention.maxAge` (the capture converters delete older files within a
    minute), or delete the files `captures-*` in that directory (a name starts with the UTC time of
    its first row, so a time range is a range of names), or delete the PersistentVolumeClaim (its
    data goes with it when the volume's reclaim policy is Delete).
    """

    enabled: bool = Field(
        default=False,
        description="Capture a sample of the requests Triton answers: Triton traces them, inputs and outputs, and a "
        "sidecar writes the traces into capture files. Clients call Triton directly either way.",
    )
    sample_rate: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Fraction of requests captured: Triton traces one request in every round(1/sampleRate) "
        "(0.1: every 10th; 0.3: every 3rd), over HTTP and gRPC alike; 0 captures none.",
    )
    volume_claim: OptionalObjectName = Field(
        default="",
        description="PersistentVolumeClaim for captured samples. Several ModelDeployments may share it: each one's "
        "files go into a directory named after it (<claim>/<metadata.name>/), which only its own converters write "
        "and sweep and its DriftMonitors read. The files are user data (inputs and outputs of live requests), "
        "readable by the pods' group only; deleting the claim (reclaim policy Delete) erases them all, as does "
        "deleting the files captures-* in that directory.",
    )
    format: CaptureFormat = Field(default="parquet", description="File format: parquet or npz.")
    retention: CaptureRetention = Field(
        default_factory=CaptureRetention,
        description="How long and how much is kept of this ModelDeployment's captures (its directory on the claim, "
        "whoever else shares the claim): older files, then the oldest beyond the size, are deleted. To erase "
        "captures by age, lower maxAge; to erase them all, delete the files captures-* in that directory (or the "
        "claim itself).",
    )
    request_ids: bool = Field(
        default=False,
        description="Write each request's id (the KServe `id`, at most its first 64 characters) into the "
        "captures; off, the column is left empty, so captures cannot be joined with logs that carry the id.",
    )

    rules = (
        Rule(
            cel="!self.enabled || self.volumeClaim != ''",
            message="volumeClaim is required when capture is enabled",
            check=lambda c: not c.enabled or c.volume_claim != "",
            field_path=".volumeClaim",
        ),
    )


class GroupGaps(ApiModel):
    """The largest gaps between the judged groups of any sensitive feature that a version may show."""

    metric_gap: float | None = Field(
        default=None,
        ge=0.0,
        description="Best minus worst group on the evaluation's metric (accuracy or rmse), in its units.",
    )
    demographic_parity_difference: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Largest minus smallest selection rate between groups."
    )
    equal_opportunity_difference: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Largest minus smallest true-positive rate between groups."
    )


class Gates(ApiModel):
    """What a new version must show, in its TrainingJob's evaluation, to be rolled out.

    A version that fails one is held back: the served version stays, status.candidateVersion names
    the held one and the Promoted condition says which gate failed with its numbers. Annotating the
    ModelDeployment `scaleml.dev/promote=<version>` serves that candidate anyway (recorded in status).
    """

    metric: Literal["", "accuracy", "f1", "auc", "mae", "rmse"] = Field(
        default="",
        description="The metric minMetric, maxMetric, maxRegression and maxGroupGap.metricGap judge: accuracy, f1, "
        "auc, mae or rmse; empty: the evaluation's own (accuracy for classification, rmse for regression).",
    )
    min_metric: float | None = Field(default=None, description="The least the metric may be (for accuracy, f1, auc).")
    max_metric: float | None = Field(default=None, description="The most the metric may be (for mae, rmse).")
    max_regression: float | None = Field(
        default=None,
        ge=0.0,
        description="How much worse than the served version the new one may be, in the metric's units, both "
        "measured on the new version's validation rows (the served version must be among the ones its "
        "TrainingJob compared: evaluation.compareVersions).",
    )
    max_group_gap: GroupGaps | None = Field(default=None, description="Largest gaps between groups, per measure.")
    min_disparate_impact_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Least ratio of the smallest to the largest selection rate between groups (0.8: four-fifths).",
    )
    require_evaluation: bool = Field(
        default=True,
        description="A version whose evaluation lacks a number a gate needs (no evaluation, no sensitive feature, "
        "the served version not compared) fails that gate; false: such a gate is skipped, and the condition "
        "says so.",
    )

    rules = (
        Rule(
            cel="!has(self.minMetric) || !has(self.maxMetric) || self.minMetric <= self.maxMetric",
            message="minMetric must not be above maxMetric",
            check=lambda g: g.min_metric is None or g.max_metric is None or g.min_metric <= g.max_metric,
            field_path=".minMetric",
        ),
    )


class Promotion(ApiModel):
    """Which new versions are served: all (no gates), or those that pass the gates."""

    gates: Gates | None = Field(
        default=None,
        description="Gates a new version must pass to be rolled out; absent: every new version rolls out. They do not "
        "apply to a pinned model.version, which is served as asked.",
    )


class Explain(ApiModel):
    """Explanations of single predictions, served next to the model."""

    enabled: bool = Field(
        default=False,
        description="Serve `<modelName>-explain` beside the model, on the same endpoints: it takes the model's "
        "input and returns ATTRIBUTIONS, one integrated-gradients attribution per input element (of the predicted "
        "class's logit, or of the value), against the mean training row. Versions a TrainingJob exported with "
        "TorchScript have one, except models over token ids. It runs on the libtorch backend, or on the python "
        "backend when the model does; the cost of a batch is that of predicting 50 times as many rows, twice.",
    )


class ModelDeploymentSpec(ApiModel):
    """The desired serving setup."""

    model: ModelSource = Field(description="The model to serve.")
    backend: Backend = Field(
        default="pytorch", description="Triton backend: pytorch (libtorch), onnx (onnxruntime) or python."
    )
    triton_image: OptionalImage = Field(
        default="", description="Triton server image; empty selects the operator's pinned default."
    )
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching.")
    instances: Instances = Field(default_factory=Instances, description="Model instances per server.")
    resources: ServingResources = Field(default_factory=ServingResources, description="Per-pod resources.")
    replicas: int = Field(
        default=1, ge=0, le=1000, description="Replicas when autoscaling is off (the scale subresource)."
    )
    autoscaling: Autoscaling | None = Field(default=None, description="Autoscaling; absent: fixed replicas.")
    capture: Capture = Field(default_factory=Capture, description="Request capture for drift monitoring.")
    promotion: Promotion = Field(default_factory=Promotion, description="Gates that keep a worse version out.")
    explain: Explain = Field(default_factory=Explain, description="Explanations served beside the model.")

    rules = (
        Rule(
            cel="self.instances.kind != 'gpu' || self.resources.gpus > 0",
            message="instances.kind gpu needs resources.gpus > 0",
            check=lambda s: s.instances.kind != "gpu" or s.resources.gpus > 0,
            field_path=".instances.kind",
        ),
        # A python-backend model ScaleML exports writes its own capture traces; one from a repository
        # would have to be traced by Triton, whose tracer crashes the python backend under load (2.51).
        Rule(
            cel="!self.capture.enabled || self.backend != 'python' || !has(self.model.repository)",
            message="capture of a python-backend model works for models a TrainingJob exports "
            "(model.fromTrainingJob), not for a model.repository",
            check=lambda s: not s.capture.enabled or s.backend != "python" or s.model.repository is None,
            field_path=".capture.enabled",
        ),
        # Gates judge a version by its TrainingJob's evaluation; a repository's versions have none.
        Rule(
            cel="!has(self.promotion.gates) || self.model.fromTrainingJob != ''",
            message="promotion.gates judge versions a TrainingJob exports: they need model.fromTrainingJob",
            check=lambda s: s.promotion.gates is None or s.model.from_training_job != "",
            field_path=".promotion.gates",
        ),
    )


# On the Triton Deployment and its pod template: the model version the pods serve.
MODEL_VERSION_ANNOTATION: Final = "scaleml.dev/model-version"
# On the Triton Deployment: the model it serves, "<volumeClaim>/<modelName>".
MODEL_ANNOTATION: Final = "scaleml.dev/model"
# On a ModelDeployment: serve this version although it failed the promotion gates (audited in status).
PROMOTE_ANNOTATION: Final = "scaleml.dev/promote"
# The Triton container of a serving pod, whose failures say why a model does not load.
TRITON_CONTAINER: Final = "triton"


DeploymentPhase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]


class Endpoints(ApiModel):
    """In-cluster URLs of the inference service."""

    http: str = Field(default="", max_length=256, description="KServe v2 HTTP endpoint.")
    grpc: str = Field(default="", max_length=256, description="KServe v2 gRPC endpoint.")


class Override(ApiModel):
    """A version served by the promote annotation although it failed a gate."""

    version: int = Field(ge=1, description="The version the annotation promoted.")
    time: datetime = Field(description="When the operator first served it on the annotation's word.")
    # Part of the Promoted condition's message, and so within its bound.
    failed: str = Field(default="", max_length=32768, description="What the gates said of it.")


class ModelDeploymentStatus(ApiModel):
    """The observed state of a ModelDeployment."""

    phase: DeploymentPhase | None = Field(default=None, description="Pending, Progressing, Ready, Degraded or Failed.")
    conditions: Conditions
    observed_generation: int | None = Field(default=None, ge=0, description="Generation last acted on.")
    replicas: int | None = Field(default=None, ge=0, description="Triton pods that exist.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Triton pods that are ready.")
    served_version: int | None = Field(default=None, ge=1, description="Model version being served.")
    candidate_version: int | None = Field(
        default=None, ge=1, description="The newest version, when the promotion gates hold it back; else absent."
    )
    override: Override | None = Field(default=None, description="The last version promoted by the annotation.")
    endpoints: Endpoints | None = Field(default=None, description="Where to send inference requests.")
    selector: str | None = Field(
        default=None, max_length=1024, description="Label selector of the pods (for the scale subresource)."
    )


MODEL_DEPLOYMENT = Kind(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_name="md",
    description="A Triton Inference Server deployment serving a model repository, with autoscaling.",
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    columns=(
        PHASE_COLUMN,
        PrinterColumn("Model", ".spec.model.fromTrainingJob", description="Source TrainingJob."),
        PrinterColumn("Served", ".status.servedVersion", "integer", "Model version being served."),
        PrinterColumn("Held", ".status.candidateVersion", "integer", "Newest version, held back by a gate."),
        PrinterColumn("Ready", ".status.readyReplicas", "integer", "Ready Triton pods."),
        PrinterColumn("Replicas", ".status.replicas", "integer", "Triton pods."),
        AGE_COLUMN,
    ),
    max_name_length=52,
    scale=True,
)


VOCABULARY: Final = Vocabulary(MODEL_DEPLOYMENT.kind)

PROGRESSING: Final = VOCABULARY.condition("Progressing", "A rollout is under way; the message says what it waits for.")
DEGRADED: Final = VOCABULARY.condition(
    "Degraded", "Triton fails on some or all replicas (the message has its log), or a child is not applied."
)
PROMOTED: Final = VOCABULARY.condition(
    "Promoted", "The newest version passed the promotion gates (or was promoted by hand) and is the one to serve."
)

TRAINING_JOB_NOT_FOUND: Final = VOCABULARY.reason(
    "TrainingJobNotFound",
    "The TrainingJob in spec.model.fromTrainingJob does not exist (yet).",
    on=(READY, PROGRESSING),
)
WAITING_FOR_MODEL: Final = VOCABULARY.reason(
    "WaitingForModel",
    "The TrainingJob has not exported a version yet; no Deployment until then.",
    on=(READY, PROGRESSING),
)
ROLLOUT_IN_PROGRESS: Final = VOCABULARY.reason(
    "RolloutInProgress", "The newest template is rolling out.", on=(PROGRESSING,)
)
ROLLOUT_COMPLETE: Final = VOCABULARY.reason(
    "RolloutComplete", "Every replica runs the newest template.", on=(PROGRESSING,)
)
NO_FAILURE: Final = VOCABULARY.reason("NoFailure", "No replica fails.", on=(DEGRADED,))
MODEL_LOAD_FAILED: Final = VOCABULARY.reason(
    "ModelLoadFailed", "Triton exited because the model did not load.", on=(DEGRADED, READY)
)
SERVER_CRASHING: Final = VOCABULARY.reason("ServerCrashing", "Triton keeps exiting.", on=(DEGRADED, READY))
PROGRESS_DEADLINE_EXCEEDED: Final = VOCABULARY.reason(
    "ProgressDeadlineExceeded", "The rollout made no progress within the Deployment's deadline.", on=(DEGRADED, READY)
)
FAILED_CREATE: Final = VOCABULARY.reason(
    "FailedCreate", "The Deployment cannot create pods (its ReplicaFailure reason is passed on).", on=(DEGRADED, READY)
)
GATES_PASSED: Final = VOCABULARY.reason(
    "GatesPassed", "The newest version passed every gate; the message has the numbers.", on=(PROMOTED,)
)
GATE_FAILED: Final = VOCABULARY.reason(
    "GateFailed",
    "The newest version failed a gate and is held back; the message names the gate and the numbers.",
    on=(PROMOTED, READY, PROGRESSING),
)
NOT_GATED: Final = VOCABULARY.reason(
    "NotGated",
    "No gates (spec.promotion.gates absent), a pinned version or a repository (served as asked), or no version yet.",
    on=(PROMOTED,),
)
PROMOTED_BY_ANNOTATION: Final = VOCABULARY.reason(
    "PromotedByAnnotation", "The newest version failed a gate but the promote annotation names it.", on=(PROMOTED,)
)
CHILD_NOT_APPLIED: Final = VOCABULARY.reason(
    "SpecNotApplied",
    "A child is not as the spec asks: the API server refused it, or its name is taken (SpecApplied says which and "
    "why). The replicas serve without it; without a refused autoscaler, at the replicas the Deployment has.",
    on=(READY, DEGRADED),
)
SCALED_TO_ZERO: Final = VOCABULARY.reason("ScaledToZero", "The Deployment is scaled to zero replicas.", on=(READY,))
NO_READY_REPLICA: Final = VOCABULARY.reason("NoReadyReplica", "No replica is ready yet.", on=(READY,))
REPLICAS_READY: Final = VOCABULARY.reason(
    "ReplicasReady", "At least one replica serves; the message says how many and which version.", on=(READY,)
)
# Why a Triton pod of the newest template cannot start, in the scheduler's or the kubelet's own reason:
# Progressing gives it while the rollout waits for that pod, Ready too while no replica serves. Another
# reason of theirs is not given as a reason; their words are in the message all the same.
POD_START_PROBLEMS: Final = {
    VOCABULARY.reason(
        reason,
        f"A Triton pod of the newest template cannot start: {meaning} The message names the pod and has the "
        "scheduler's or kubelet's words (Ready has it only while no replica serves).",
        on=(PROGRESSING, READY),
    )
    for reason, meaning in POD_START_REASONS.items()
}

MODEL_VERSION_SERVED: Final = VOCABULARY.event(
    "ModelVersionServed", "Normal", "Every ready replica serves a new version."
)
VERSION_HELD_BACK: Final = VOCABULARY.event(
    "VersionHeldBack", "Warning", "A new version failed a promotion gate; the served version stays."
)
VERSION_PROMOTED_BY_HAND: Final = VOCABULARY.event(
    "VersionPromotedByAnnotation", "Warning", "A version that failed a gate is served on the promote annotation."
)
MODEL_DEPLOYMENT_READY: Final = VOCABULARY.event("ModelDeploymentReady", "Normal", "The phase became Ready.")
for _failure in (MODEL_LOAD_FAILED, SERVER_CRASHING, PROGRESS_DEADLINE_EXCEEDED, FAILED_CREATE):
    VOCABULARY.event(_failure, "Warning", "The phase became Degraded or Failed for this reason (Degraded's).")
for _problem in POD_START_REASONS:
    VOCABULARY.event(
        _problem,
        "Warning",
        "A Triton pod of the newest template cannot start, for this reason: posted when Progressing takes it after "
        "no such reason (not again as the kubelet alternates between them); the message is Progressing's.",
    )
