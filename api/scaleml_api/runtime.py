"""How the operator hands work to its pods, and how they answer: training runs and serving pods.

The operator renders a `TrainingRun` as JSON into a ConfigMap, mounted in every worker container
at CONFIG_DIR/CONFIG_FILE, and starts `torchrun ... -m scaleml_workloads.training --config FILE`
(a drift monitor's `MonitorRun` takes the same road; a serving pod's `ServingRun` is in its model
agent's CONFIG_ENV). The pod reports progress by patching the `status.progress` of its
TrainingJob, and ends with one of the exit codes below, which the operator's Job podFailurePolicy
maps to "fail now" or "retry".
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

from pydantic import Field

from scaleml_api.base import ApiModel, ObjectName, canonical_duration, canonical_quantity
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec
from scaleml_api.v1alpha1.modeldeployment import MODEL_DEPLOYMENT, Capture, ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import ModelName, TrainingJobSpec

# The run config of a serving pod's model agent; the other workloads read it when given no --config.
CONFIG_ENV: Final = "SCALEML_CONFIG"
# In a pod the run config is a file: a ConfigMap owned by the object, mounted read-only and named
# with --config, so a large spec is stored once (not in every container's env, nor in the pods).
CONFIG_DIR: Final = "/etc/scaleml"
CONFIG_FILE: Final = "run.json"

# Where the volumes of a training pod are mounted.
DATA_DIR: Final = "/data"
CHECKPOINT_DIR: Final = "/checkpoints"
OUTPUT_DIR: Final = "/output"
# Writable scratch space on a read-only root filesystem (torch.compile caches, temporary files).
SCRATCH_DIR: Final = "/tmp"

# Exit codes of the training program.
EXIT_SUCCEEDED: Final = 0
# The data or the spec is wrong (a column is missing, a custom entrypoint does not import, ...):
# retrying cannot help, so the job fails at once. The reason is in the termination message.
EXIT_INVALID_INPUT: Final = 2
# The run was interrupted by something outside the program: a peer worker went away (its pod was
# deleted, preempted, drained or crashed), the rendezvous or the c10d store was lost, or torchrun
# stopped the workers. torchrun reports all of these as 1, like a program error, which fails the job
# at once; this code lets the Job retry the pod instead (counted against its worker's backoffLimit),
# and the retry resumes from the newest checkpoint. 75 is EX_TEMPFAIL of sysexits.h ("try again
# later"), far from the signal codes (128 + N). A pod that is itself stopped ends with 143, as any
# killed pod.
EXIT_INTERRUPTED: Final = 75
# Where the container writes the reason for its exit (the Pod's terminationMessagePath); tests and
# local runs point it elsewhere with the variable.
TERMINATION_LOG: Final = "/dev/termination-log"
TERMINATION_LOG_ENV: Final = "SCALEML_TERMINATION_LOG"
# Kubernetes keeps the first 4096 bytes of a termination message.
TERMINATION_LIMIT: Final = 4096

# c10d rendezvous port on worker 0.
RENDEZVOUS_PORT: Final = 29400
METRICS_PORT: Final = 9090


class Lineage(ApiModel):
    """Why a TrainingJob exists, when a DriftMonitor created it to retrain another (for the model card)."""

    retrained_by: str = Field(default="", description="The DriftMonitor that created the job.")
    retrain_of: str = Field(default="", description="The TrainingJob it retrains.")
    since: str = Field(default="", description="When the run of drifted or degraded windows that triggered it began.")
    rule: str = Field(default="", description="What persisted: drift or degradation.")


class TrainingRun(ApiModel):
    """Everything a training pod needs besides its volumes."""

    namespace: ObjectName = Field(description="Namespace of the TrainingJob.")
    name: ObjectName = Field(description="Name of the TrainingJob, whose status the pod reports to.")
    spec: TrainingJobSpec = Field(description="The TrainingJob's spec, as accepted by the operator.")
    data_dir: str = Field(default=DATA_DIR, description="Mount of spec.data.volumeClaim.")
    checkpoint_dir: str | None = Field(
        default=CHECKPOINT_DIR, description="Mount of spec.checkpoint.volumeClaim; None without checkpoints."
    )
    output_dir: str = Field(default=OUTPUT_DIR, description="Mount of the model repository (spec.output).")
    metrics_port: int = Field(default=METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 turns it off.")
    report_status: bool = Field(
        default=True, description="Patch the TrainingJob's status.progress through the Kubernetes API."
    )
    # Left out of the JSON when unset, as status_file: the pods' config, and their template hash, stay as they were.
    lineage: Lineage | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The drift episode that triggered a retraining job; None for a job created by hand.",
    )
    # Left out of the JSON when unset: the pods' config, and so their template hash, stays as it was.
    status_file: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Merge the status into this JSON file instead of the API (local runs).",
    )


# Serving pods: where the model agent finds the exported versions and builds Triton's repository.
REPOSITORY_DIR: Final = "/repository"
SERVING_DIR: Final = "/serving"
# Where a ModelDeployment's capture claim is mounted, in its serving pods and in its monitors' pods.
CAPTURE_DIR: Final = "/captures"
TRITON_HTTP_PORT: Final = 8000
TRITON_GRPC_PORT: Final = 8001
TRITON_METRICS_PORT: Final = 8002
# With capture on, Triton writes its traces here (a volume of the pod) for the capture converter.
TRACE_DIR: Final = "/traces"
TRACE_FILE: Final = "trace.json"
# Triton writes each trace to a file of its own as soon as it is finished. Holding several for one
# file would keep them in Triton's memory (as text, several times the size of their tensors) and,
# at low traffic, for as long as it takes to collect them; writing out what it holds early means
# updating the trace settings, which restarts Triton's count of one request in every `rate`.
TRACES_PER_FILE: Final = 1
CAPTURE_METRICS_PORT: Final = 9091
AGENT_HEALTH_PORT: Final = 8090
# Triton polls its repository for versions the agent links; a rollout waits for in-flight requests this long.
REPOSITORY_POLL_SECONDS: Final = 5
EXIT_TIMEOUT_SECONDS: Final = 20


# Triton's management APIs (loading and unloading models, log settings, tracing, shared-memory
# regions) answer only requests that carry the pod's admin key: the header ADMIN_KEY_HEADER over
# HTTP, the metadata `triton-grpc-protocol-<ADMIN_KEY_HEADER>` over gRPC. Inference, health,
# metadata, model configuration and statistics stay open to every client.
RESTRICTED_APIS: Final = ("model-repository", "logging", "trace", "shared-memory")
ADMIN_KEY_HEADER: Final = "scaleml-admin-key"
# In a pod the key is random, made by the model agent when the pod starts and written into
# Triton's repository (hidden, mode 0640): no spec or object holds it, and only the pod's
# containers that mount the repository, and whoever may exec into them, can read it.
ADMIN_KEY_FILE: Final = ".triton-admin-key"


def restricted_api_options(key: str) -> list[str]:
    """The tritonserver options that restrict RESTRICTED_APIS to callers that send `key`."""
    restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={key}"
    return [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]


def triton_options(repository: str) -> list[str]:
    """Options of every tritonserver a ModelDeployment runs, in a pod or locally (ports apart)."""
    return [
        f"--model-repository={repository}",
        # New versions load in place; the repository holds only what the agent linked.
        "--model-control-mode=poll",
        f"--repository-poll-secs={REPOSITORY_POLL_SECONDS}",
        # Ready only when the model is: a pod takes traffic once it can answer.
        "--strict-readiness=true",
        "--disable-auto-complete-config",
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}",
        # Request and queue latency quantiles (nv_inference_*_summary_us), not only cumulative sums.
        "--metrics-config=summary_latencies=true",
        "--log-format=ISO8601",
    ]


def trace_rate(sample_rate: float) -> int:
    """Triton traces one request in every this many: the whole number nearest 1/sample_rate (0: none)."""
    return max(1, round(1 / sample_rate)) if sample_rate > 0 else 0


def traced_by_triton(spec: ModelDeploymentSpec) -> bool:
    """Whether Triton's tracer writes the capture traces of a ModelDeployment's requests.

    A python-backend model that a TrainingJob exports writes the same traces itself: with tracing
    on, Triton 2.51 aborts under concurrent requests to a python-backend model (std::length_error
    in TRITONBACKEND_ResponseNew), which no other backend here can be tested for.
    """
    return spec.capture.enabled and spec.backend != "python"


def trace_options(capture: Capture, directory: str) -> list[str]:
    """Triton's options that trace spec.capture.sampleRate of its requests, tensors included, into `directory`.

    The trace of a request holds its model, version, id and timestamps (level TIMESTAMPS) and its
    input and output tensors (level TENSORS); the capture converter reads it from there.
    """
    rate = trace_rate(capture.sample_rate)
    levels = ["level=TIMESTAMPS", "level=TENSORS"] if rate else ["level=OFF"]
    return [
        "--trace-config=mode=triton",
        *(f"--trace-config={level}" for level in levels),
        f"--trace-config=rate={max(rate, 1)}",
        "--trace-config=count=-1",
        f"--trace-config=triton,file={directory}/{TRACE_FILE}",
        f"--trace-config=triton,log-frequency={TRACES_PER_FILE}",
    ]


def capture_dir(model_deployment: str) -> str:
    """Where the ModelDeployment `model_deployment` keeps its captures: a directory of its own on the claim.

    Several ModelDeployments may share a capture claim; each one's converters write, sweep and its
    monitors read only that directory, so one's retention or traffic never reaches another's. The
    name is a DNS-1035 label (the API admits no other): checked again, as it becomes a path.
    """
    if MODEL_DEPLOYMENT.name_error(model_deployment) is not None:
        raise ValueError(f"{model_deployment!r} is not a ModelDeployment's name, and no directory of captures")
    return f"{CAPTURE_DIR}/{model_deployment}"


def capture_options(capture: Capture) -> list[str]:
    """The options of the capture converter that carry a ModelDeployment's spec.capture, in a pod or locally."""
    options = [
        f"--format={capture.format}",
        f"--max-age={canonical_duration(capture.retention.max_age)}",
        f"--max-bytes={canonical_quantity(capture.retention.max_bytes)}",
    ]
    if capture.request_ids:
        options.append("--request-ids")
    return options


class ServingRun(ApiModel):
    """What the model agent of a serving pod needs: which versions to link into Triton's repository, and how."""

    namespace: ObjectName = Field(description="Namespace of the ModelDeployment.")
    name: ObjectName = Field(description="Name of the ModelDeployment.")
    spec: ModelDeploymentSpec = Field(description="The ModelDeployment's spec, as accepted by the operator.")
    model_name: ModelName = Field(description="Name of the model directory, and of the model in Triton.")
    source_dir: str = Field(description="The model directory with the exported versions (read only).")
    serving_dir: str = Field(default=SERVING_DIR, description="Triton's model repository, which the agent builds.")
    traces_dir: str = Field(
        default=TRACE_DIR, description="Where a python-backend model writes the traces of the requests it captures."
    )
    version: int | None = Field(
        default=None,
        ge=1,
        description="The version to serve; None follows the newest. The operator resolves a TrainingJob's version.",
    )
    # Left out of the JSON when unset: a pod's config, and so its template hash, stays as it was.
    up_to: int | None = Field(
        default=None,
        ge=1,
        exclude_if=lambda value: value is None,
        description="Follow the newest version up to this one: what the promotion gates allow, in local mode, "
        "where one server follows versions in place instead of a Deployment rolling to a pinned one.",
    )
    poll_seconds: float = Field(default=5.0, gt=0, description="How often the agent looks for new versions.")
    health_port: int = Field(default=AGENT_HEALTH_PORT, ge=0, le=65535, description="Health endpoint; 0: none.")


# Drift monitor pods.
REFERENCE_DIR: Final = "/reference"
REPORTS_DIR: Final = "/reports"
REPORT_PORT: Final = 8080


class MonitorRun(ApiModel):
    """What a drift monitor pod needs: the spec, where the reference profile and the captures are, and its ports."""

    namespace: ObjectName = Field(description="Namespace of the DriftMonitor.")
    name: ObjectName = Field(description="Name of the DriftMonitor, whose status the monitor reports to.")
    spec: DriftMonitorSpec = Field(description="The DriftMonitor's spec, as accepted by the operator.")
    profile_path: str = Field(description="The reference profile (profile.json) the operator resolved.")
    model_version: int | None = Field(default=None, description="The served model version the profile belongs to.")
    model_name: ModelName | None = Field(
        default=None,
        description="The model the target serves, as the captures' `model` column names it: rows of other models are "
        "left out. None: rows of every model.",
    )
    captures_dir: str = Field(description="The target ModelDeployment's directory of captures (read only).")
    legacy_captures_dir: str | None = Field(
        default=None,
        description="The capture claim's root, where captures were written before each ModelDeployment had a "
        "directory of its own: its files are read too (rows of `model_name` only) until retention has deleted "
        "them. None: not read.",
    )
    reports_dir: str = Field(default=REPORTS_DIR, description="Where the HTML reports go.")
    metrics_port: int = Field(default=METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 turns it off.")
    report_port: int = Field(default=REPORT_PORT, ge=0, le=65535, description="Report and health port; 0: none.")
    report_status: bool = Field(default=True, description="Patch the DriftMonitor's status and post Events.")
    status_file: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Merge the status into this JSON file instead of the API, and post no Events.",
    )


def write_termination_message(message: str) -> None:
    """Leaves `message` where Kubernetes reads the reason a container ended; best effort."""
    path = Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG))
    try:
        path.write_text(message[:TERMINATION_LIMIT])
    except OSError as error:
        logging.getLogger(__name__).warning("cannot write the termination log %s: %s", path, error)
