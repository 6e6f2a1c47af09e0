"""DriftMonitor: the spec users write (and the monitor reads), its status, and how kubectl shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import Field

from scaleml_api.base import (
    ApiModel,
    ColumnName,
    Duration,
    ListType,
    ObjectName,
    OptionalObjectName,
    OptionalVolumePath,
    Rule,
    optional_fields,
)
from scaleml_api.conditions import READY, Conditions, Vocabulary
from scaleml_api.kind import AGE_COLUMN, Kind, PrinterColumn
from scaleml_api.v1alpha1.modeldeployment import not_shorter
from scaleml_api.v1alpha1.trainingjob import DataSpec, Hyperparameters, ModelSpec, Resources, RunPolicy


class MonitorTarget(ApiModel):
    """The deployment whose captured traffic is monitored."""

    model_deployment: ObjectName = Field(
        description="ModelDeployment (same namespace) with capture enabled: the monitor reads the captures in its "
        "directory on the capture claim (<claim>/<name>/), of the model it serves only."
    )


class ReferenceSource(ApiModel):
    """The reference profile live data is compared with."""

    from_training_job: OptionalObjectName = Field(
        default="", description="Use the profile exported by this TrainingJob (same namespace)."
    )
    path: OptionalVolumePath = Field(default="", description="Path of a reference profile inside volumeClaim.")
    volume_claim: OptionalObjectName = Field(default="", description="PersistentVolumeClaim that holds path.")

    rules = (
        Rule(
            cel="(self.fromTrainingJob != '') != (self.path != '')",
            message="exactly one of fromTrainingJob and path must be set",
            check=lambda r: (r.from_training_job != "") != (r.path != ""),
        ),
        Rule(
            cel="(self.path == '') == (self.volumeClaim == '')",
            message="path and volumeClaim go together",
            check=lambda r: (r.path == "") == (r.volume_claim == ""),
            field_path=".volumeClaim",
        ),
    )


class Tests(ApiModel):
    """Statistical tests per kind of feature."""

    numeric: Literal["ks", "psi", "wasserstein", "js"] = Field(
        default="ks", description="Test for numeric features: ks, psi, wasserstein or js."
    )
    categorical: Literal["chi2", "psi", "js"] = Field(
        default="chi2", description="Test for categorical features: chi2, psi or js."
    )
    multivariate: Literal["mmd", "none"] = Field(
        default="mmd", description="Test over all features together: mmd (maximum mean discrepancy) or none."
    )


class Thresholds(ApiModel):
    """When a test counts as drift."""

    p_value: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="The window's error rate: a test drifts when its p-value, adjusted across all tests of the "
        "window (Benjamini-Hochberg), is below this, so a window without drift is flagged at most at this rate.",
    )
    psi: float = Field(
        default=0.2, gt=0.0, description="Least PSI that counts as drift (besides its adjusted p-value below pValue)."
    )
    wasserstein: float = Field(
        default=0.1,
        gt=0.0,
        description="Least Wasserstein-1, in reference standard deviations, that counts as drift (besides its "
        "adjusted p-value below pValue).",
    )
    js: float = Field(
        default=0.1,
        gt=0.0,
        le=1.0,
        description="Least Jensen-Shannon distance that counts as drift (besides its adjusted p-value below pValue).",
    )
    share_of_drifted_features: float | None = Field(
        default=None,
        gt=0.0,
        le=1.0,
        description="Optional quorum: the window drifts only when at least this share of the features tested drift "
        "(or the multivariate test does). Unset: any drifted feature makes the window drifted.",
    )
    # 0.05: above what the estimate itself misses by on undrifted traffic (the calibration error left after
    # temperature scaling, a few hundredths, and the sampling error of a window), and a loss users notice.
    accuracy_drop: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="Classifiers: the window's accuracy is degraded when its estimated accuracy is more than this "
        "below the validation accuracy (0.05: five points of accuracy).",
    )


# The shortest time between two checks: each one lists and reads the capture volume.
MIN_CHECK_INTERVAL: Final = "10s"
# The most captured data one window holds, whatever its rows (the monitor's memory limit is the operator's).
WINDOW_MAX_BYTES: Final = 128 * 1024 * 1024


class Window(ApiModel):
    """How much live data one check looks at, and how often."""

    size: int = Field(
        default=5000,
        ge=10,
        le=10_000_000,
        description=f"Newest captured rows per check. A window also holds at most {WINDOW_MAX_BYTES // 2**20} MiB "
        "of captured data (read from the newest files): with larger rows it has fewer rows, and its result says so.",
    )
    every: Duration = Field(
        default="5m", description=f'Time between checks, at least {MIN_CHECK_INTERVAL}, e.g. "30s", "5m", "1h".'
    )

    rules = (not_shorter("every", MIN_CHECK_INTERVAL, "window.every"),)


# Generated from the TrainingJob's own sections, so their fields, bounds and text are stated once.
HyperparameterOverrides = optional_fields(
    Hyperparameters, "HyperparameterOverrides", "Hyperparameters to change; the others are the source job's."
)
DataOverrides = optional_fields(
    DataSpec,
    "DataOverrides",
    "What to read, on the source job's own claim; the claim, target and features are the source's.",
    only=("source", "format", "validation_split", "checks"),
)
ResourceOverrides = optional_fields(
    Resources,
    "ResourceOverrides",
    "Smaller or equal resources: a value above the source job's stops the retraining (OverridesExceedSource).",
    only=("workers", "procs_per_worker", "gpus_per_worker", "cpu", "memory"),
)
ModelOverrides = optional_fields(
    ModelSpec,
    "ModelOverrides",
    "Warm start from an exported version; the network is the source's.",
    only=("init_from",),
)
RunPolicyOverrides = optional_fields(RunPolicy, "RunPolicyOverrides", "How the retraining Job runs.")


class RetrainOverrides(ApiModel):
    """What retraining may change of the TrainingJob it retrains: an allow-list, checked by the API server.

    The retraining TrainingJob is created with the operator's rights on behalf of whoever may edit
    the DriftMonitor, who need not be allowed to create TrainingJobs: so nothing that decides what
    code runs, as whom, on what, or where (image, model architecture and entrypoint, env, volumes,
    scheduling, pod metadata) can be changed here. (Its sections are classes made at import time,
    which a static type checker cannot see: hence the ignores.)
    """

    hyperparameters: HyperparameterOverrides | None = Field(default=None, description="Hyperparameters to change.")  # type: ignore[valid-type]
    data: DataOverrides | None = Field(default=None, description="A new data file (on the source job's claim).")  # type: ignore[valid-type]
    resources: ResourceOverrides | None = Field(default=None, description="At most the source job's resources.")  # type: ignore[valid-type]
    model: ModelOverrides | None = Field(default=None, description="Warm start (model.initFrom).")  # type: ignore[valid-type]
    run_policy: RunPolicyOverrides | None = Field(default=None, description="The retraining Job's run policy.")  # type: ignore[valid-type]


# What persisting can retrain (spec.retrain.when counts one or both), and the status fields the
# monitor writes of each one's run of windows, which retraining reads: the last window's flag, the
# run's length, and when it began.
RetrainRule = Literal["drift", "degradation"]
RUN_FIELDS: Final[dict[RetrainRule, tuple[str, str, str]]] = {
    "drift": ("driftDetected", "consecutiveDriftedWindows", "driftSince"),
    "degradation": ("degraded", "consecutiveDegradedWindows", "degradedSince"),
}


class RetrainPolicy(ApiModel):
    """Creating a TrainingJob when drift, or a degraded estimated accuracy, persists."""

    enabled: bool = Field(default=False, description="Create a TrainingJob when what `when` counts persists.")
    when: Literal["drift", "degradation", "either"] = Field(
        default="drift",
        description="What persisting retrains: drift (drifted windows), degradation (windows whose estimated "
        "accuracy is more than thresholds.accuracyDrop below the validation accuracy; classifiers only), or "
        "either (whichever of the two persists for `after` windows first).",
    )
    after: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Consecutive windows, drifted or degraded as `when` says, before retraining.",
    )
    cooldown: Duration = Field(
        default="24h", description="Least time between two retraining jobs, from the newest one's creation."
    )
    use_captured_data: bool = Field(
        default=False,
        description="Not applied: captured requests hold the model's own outputs, never true labels. Retraining "
        "trains on the TrainingJob's data.source, where newly labelled data belongs; the Retraining condition "
        "says so when this is true.",
    )
    training_job_overrides: RetrainOverrides = Field(
        default_factory=RetrainOverrides,
        description="What the retraining TrainingJob changes of the one that produced the served model "
        "(hyperparameters, data file, resources up to the source's, warm start, run policy); "
        "everything else (image, model code, volumes, env, scheduling, pod metadata) is the source's.",
    )


class DriftMonitorSpec(ApiModel):
    """The desired monitoring."""

    target: MonitorTarget = Field(description="What to monitor.")
    reference: ReferenceSource = Field(description="What to compare with.")
    features: Annotated[list[ColumnName], ListType()] = Field(
        default=[],
        max_length=4096,
        description="Features to test; empty: every feature of the reference profile.",
    )
    tests: Tests = Field(default_factory=Tests, description="Statistical tests.")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="Drift thresholds.")
    window: Window = Field(default_factory=Window, description="Window size and cadence.")
    retrain: RetrainPolicy = Field(default_factory=RetrainPolicy, description="Retraining policy.")


class TopFeature(ApiModel):
    """A feature of the last window by what it adds to the drift score."""

    name: str = Field(max_length=256, description="The feature.")
    importance: float = Field(
        ge=0.0, le=1.0, description="Its importance to the model relative to the most important feature (1 if unknown)."
    )
    evidence: float = Field(
        ge=0.0,
        le=1.0,
        description="Evidence of its drift from its adjusted p-value: 0.5 at pValue, 1 at pValue squared.",
    )


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
    drifted_features: list[ColumnName] = Field(
        default=[], max_length=4096, description="Features that drifted in the last window."
    )
    verdict: str | None = Field(
        default=None,
        max_length=1024,
        description="Why the last window did or did not drift: the tests that decided, or the rule "
        "(thresholds.shareOfDriftedFeatures) that kept a window with drifted features quiet.",
    )
    top_features: list[TopFeature] = Field(
        default=[], max_length=10, description="The features that count most in driftScore: importance times evidence."
    )
    window_size: int | None = Field(default=None, ge=0, description="Rows in the last window.")
    consecutive_drifted_windows: int | None = Field(default=None, ge=0, description="Drifted windows in a row.")
    estimated_accuracy: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Classifiers: the accuracy of the last window estimated without labels, as the mean calibrated "
        "confidence of the model's answers; empty when the window has none (accuracyEstimateMessage says why).",
    )
    validation_accuracy: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The served version's accuracy on its validation rows."
    )
    accuracy_estimate_message: str | None = Field(
        default=None, max_length=1024, description="Why the last window has no estimatedAccuracy."
    )
    degraded: bool | None = Field(
        default=None,
        description="Whether estimatedAccuracy is more than thresholds.accuracyDrop below validationAccuracy.",
    )
    consecutive_degraded_windows: int | None = Field(default=None, ge=0, description="Degraded windows in a row.")
    degraded_since: datetime | None = Field(
        default=None, description="When the current run of degraded windows began; empty while there is none."
    )
    retrains_triggered: int | None = Field(
        default=None, ge=0, description="TrainingJobs created so far, counted as each is recorded in lastRetrainJob."
    )
    last_retrain_job: ObjectName | None = Field(
        default=None,
        description="Name of the newest retraining TrainingJob, written back from the job whenever it differs.",
    )
    last_retrain_time: datetime | None = Field(default=None, description="When it was created.")
    last_retrain_rule: RetrainRule | None = Field(
        default=None, description="What persisted to create it: drift, or degraded estimated accuracy."
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
        AGE_COLUMN,
    ),
    max_name_length=52,
)


VOCABULARY: Final = Vocabulary(DRIFT_MONITOR.kind)

DRIFT_DETECTED: Final = VOCABULARY.condition("DriftDetected", "The last tested window drifted from the reference.")
RETRAINING: Final = VOCABULARY.condition("Retraining", "A TrainingJob this monitor created is retraining the model.")

MODEL_DEPLOYMENT_NOT_FOUND: Final = VOCABULARY.reason(
    "ModelDeploymentNotFound", "The target ModelDeployment does not exist (yet).", on=(READY,)
)
CAPTURE_DISABLED: Final = VOCABULARY.reason(
    "CaptureDisabled", "The target does not capture requests (its spec.capture).", on=(READY,)
)
TRAINING_JOB_NOT_FOUND: Final = VOCABULARY.reason(
    "TrainingJobNotFound", "The TrainingJob in spec.reference.fromTrainingJob does not exist (yet).", on=(READY,)
)
WAITING_FOR_MODEL: Final = VOCABULARY.reason(
    "WaitingForModel", "Neither the target nor the TrainingJob has a model version yet.", on=(READY,)
)
MONITOR_RUNNING: Final = VOCABULARY.reason("MonitorRunning", "The monitor's pod is available.", on=(READY,))
MONITOR_STARTING: Final = VOCABULARY.reason("MonitorStarting", "The monitor's pod is not ready yet.", on=(READY,))
CHILD_NOT_APPLIED: Final = VOCABULARY.reason(
    "SpecNotApplied",
    "A child of the monitor is not as the spec asks: the API server refused it, or its name is taken (SpecApplied "
    "says which and why). A monitor that runs goes on without it.",
    on=(READY,),
)
NOT_CHECKED: Final = VOCABULARY.reason("NotChecked", "No window has been tested yet.", on=(DRIFT_DETECTED,))
DRIFT_FOUND: Final = VOCABULARY.reason(
    "DriftDetected", "The message names the drifted features, the score and the run of windows.", on=(DRIFT_DETECTED,)
)
NO_DRIFT: Final = VOCABULARY.reason("NoDrift", "The last window did not drift.", on=(DRIFT_DETECTED, RETRAINING))
DISABLED: Final = VOCABULARY.reason("Disabled", "spec.retrain.enabled is false.", on=(RETRAINING,))
DRIFT_NOT_PERSISTENT: Final = VOCABULARY.reason(
    "DriftNotPersistent", "Fewer drifted windows in a row than spec.retrain.after.", on=(RETRAINING,)
)
NOT_DEGRADED: Final = VOCABULARY.reason(
    "NotDegraded",
    "spec.retrain.when counts degradation and the last window's estimated accuracy is not degraded (or absent).",
    on=(RETRAINING,),
)
DEGRADATION_NOT_PERSISTENT: Final = VOCABULARY.reason(
    "DegradationNotPersistent", "Fewer degraded windows in a row than spec.retrain.after.", on=(RETRAINING,)
)
RETRAIN_RUNNING: Final = VOCABULARY.reason("RetrainRunning", "The last retraining job still runs.", on=(RETRAINING,))
COOLDOWN_ACTIVE: Final = VOCABULARY.reason(
    "CooldownActive", "Drift persists, but spec.retrain.cooldown has not passed since the last job.", on=(RETRAINING,)
)
EPISODE_RETRAINED: Final = VOCABULARY.reason(
    "EpisodeRetrained",
    "The run of drifted (or degraded) windows that persists already had its retraining job; the next run may retrain.",
    on=(RETRAINING,),
)
TRAINING_JOB_RUNNING: Final = VOCABULARY.reason(
    "TrainingJobRunning", "The retraining TrainingJob runs (Retraining is True).", on=(RETRAINING,)
)
NO_SOURCE_TRAINING_JOB: Final = VOCABULARY.reason(
    "NoSourceTrainingJob", "Retraining is due, but the TrainingJob of the served model is gone.", on=(RETRAINING,)
)
INVALID_OVERRIDES: Final = VOCABULARY.reason(
    "InvalidOverrides", "Retraining is due, but the overrides make an invalid TrainingJob.", on=(RETRAINING,)
)
OVERRIDES_EXCEED_SOURCE: Final = VOCABULARY.reason(
    "OverridesExceedSource",
    "Retraining is due, but trainingJobOverrides.resources ask for more than the source job has.",
    on=(RETRAINING,),
)
CUSTOM_MODEL_NOT_ALLOWED: Final = VOCABULARY.reason(
    "CustomModelNotAllowed",
    "Retraining is due, but the source job runs custom model code, an image of its own, or env that loads code "
    "from outside the operator's image, which the operator does not retrain (scaleml operator "
    "--retrain-entrypoint-prefix, --retrain-image-prefix).",
    on=(RETRAINING,),
)
RETRAIN_REJECTED: Final = VOCABULARY.reason(
    "RetrainRejected", "Retraining is due, but the API server refused the TrainingJob.", on=(RETRAINING,)
)

RETRAIN_TRIGGERED: Final = VOCABULARY.event(
    "RetrainTriggered",
    "Normal",
    "A retraining TrainingJob was created; the message says what persisted (drift or degraded accuracy).",
)
for _refusal in (
    NO_SOURCE_TRAINING_JOB,
    INVALID_OVERRIDES,
    OVERRIDES_EXCEED_SOURCE,
    CUSTOM_MODEL_NOT_ALLOWED,
    RETRAIN_REJECTED,
):
    VOCABULARY.event(_refusal, "Warning", "Retraining is due and cannot start; the message says why.")
DRIFT_DETECTED_EVENT: Final = VOCABULARY.event(
    "DriftDetected", "Warning", "Posted by the monitor pod: a window drifted after one that did not."
)
DRIFT_RESOLVED: Final = VOCABULARY.event(
    "DriftResolved", "Normal", "Posted by the monitor pod: a window no longer drifts after one that did."
)
ACCURACY_DEGRADED: Final = VOCABULARY.event(
    "AccuracyDegraded",
    "Warning",
    "Posted by the monitor pod: a window's estimated accuracy fell more than thresholds.accuracyDrop below the "
    "validation accuracy, after one that did not.",
)
ACCURACY_RECOVERED: Final = VOCABULARY.event(
    "AccuracyRecovered", "Normal", "Posted by the monitor pod: a window is no longer degraded after one that was."
)
