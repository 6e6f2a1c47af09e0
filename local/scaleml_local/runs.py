"""What each object becomes locally: the operator's run configs with mounts turned into folders, and commands.

The builders render a pod's config with the pod's mount paths; here each mount is swapped for the
folder of its volume, and what a CPU-only machine cannot honour (GPUs, mixed precision, the
libtorch and ONNX Runtime backends, which the nvidia-pytriton wheel does not ship) is dropped.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from scaleml_api import runtime
from scaleml_api.v1alpha1 import DRIFT_MONITOR, TRAINING_JOB
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_local.state import State
from scaleml_operator.builders import driftmonitor, modeldeployment, retraining, trainingjob
from scaleml_operator.builders.meta import Owner

PYTHON: Final = sys.executable
# Capture files become readable when complete; a minute (the pod default) is longer than a local window.
CAPTURE_SECONDS_PER_FILE: Final = 2.0
AGENT_POLL_SECONDS: Final = 1.0


def owner(manifest: Mapping[str, Any]) -> Owner:
    meta = manifest["metadata"]
    return Owner(manifest["kind"], meta["name"], meta["namespace"], meta["uid"])


def _mounted(path: str, mount: str, folder: Path) -> str:
    """`path` inside the pod's `mount` as a path inside `folder`."""
    if not path.startswith(mount):
        raise ValueError(f"{path} is not under {mount}")
    return str(folder) + path[len(mount) :]


def cpu_training_spec(spec: TrainingJobSpec) -> TrainingJobSpec:
    # Mixed precision pays on GPUs only; CPU autocast is slower than fp32. One machine: no elastic membership.
    resources = spec.resources.model_copy(update={"gpus_per_worker": 0})
    return spec.model_copy(update={"resources": resources, "precision": "fp32", "elastic": None})


def processes(spec: TrainingJobSpec) -> int:
    """Every worker's processes, on this one machine."""
    return spec.resources.workers * spec.resources.processes_per_worker


def training_run(state: State, job: Mapping[str, Any], spec: TrainingJobSpec) -> runtime.TrainingRun:
    local = cpu_training_spec(spec)
    run = trainingjob.training_run(owner(job), local, retraining.lineage(job["metadata"]))
    checkpoint_dir = (
        _mounted(run.checkpoint_dir, runtime.CHECKPOINT_DIR, state.volume(local.checkpoint.volume_claim))
        if run.checkpoint_dir and local.checkpoint
        else None
    )
    return run.model_copy(
        update={
            "data_dir": str(state.volume(local.data.volume_claim)),
            "checkpoint_dir": checkpoint_dir,
            "output_dir": str(state.volume(local.output.volume_claim)),
            "metrics_port": 0,
            "report_status": True,
            "status_file": str(state.workload_status_file(TRAINING_JOB, run.name).path),
        }
    )


def training_env(spec: TrainingJobSpec) -> tuple[dict[str, str], list[str]]:
    """The literal variables of spec.env for the trainer's environment, and the names left out.

    A valueFrom (a Secret's key, a field of the pod, ...) has nothing to read from without a
    cluster: those names are left unset. The names are the API's (validated, none reserved).
    """
    literal = {variable.name: variable.value for variable in spec.env if variable.value_from is None}
    return literal, [variable.name for variable in spec.env if variable.value_from is not None]


def training_command(spec: TrainingJobSpec, config: Path) -> list[str]:
    """torchrun through the pods' launcher, with a rendezvous of its own on this machine."""
    return [
        PYTHON,
        "-m",
        "scaleml_workloads.training.launch",
        "--standalone",
        "--nnodes=1",
        f"--nproc-per-node={processes(spec)}",
        "--max-restarts=0",
        "-m",
        "scaleml_workloads.training",
        "--config",
        str(config),
    ]


def cpu_serving_spec(spec: ModelDeploymentSpec) -> ModelDeploymentSpec:
    return spec.model_copy(
        update={
            "backend": "python",
            "instances": spec.instances.model_copy(update={"kind": "cpu"}),
            "resources": spec.resources.model_copy(update={"gpus": 0}),
        }
    )


def serving_run(
    state: State, deployment: Mapping[str, Any], spec: ModelDeploymentSpec, source: modeldeployment.ModelSource
) -> runtime.ServingRun:
    run = modeldeployment.serving_run(owner(deployment), cpu_serving_spec(spec), source)
    pinned = spec.model.version if isinstance(spec.model.version, int) else None
    return run.model_copy(
        update={
            "source_dir": _mounted(run.source_dir, runtime.REPOSITORY_DIR, state.volume(source.volume_claim)),
            "serving_dir": str(state.directory("serving", run.name)),
            "traces_dir": str(state.directory("traces", run.name)),
            # A pod pins the version and the Deployment rolls; one local server follows `latest` in place
            # instead (Triton loads the new version, then unloads the old one), which drops no request.
            "version": pinned,
            "poll_seconds": AGENT_POLL_SECONDS,
            "health_port": 0,
        }
    )


def capture_command(state: State, name: str, spec: ModelDeploymentSpec, traces: Path) -> list[str]:
    """The capture converter of the local ModelDeployment `name`, whose Triton traces into `traces`."""
    claim = state.volume(spec.capture.volume_claim)
    return [
        PYTHON,
        "-m",
        "scaleml_workloads.capture",
        f"--traces={traces}",
        "--metrics-port=0",
        f"--directory={_mounted(runtime.capture_dir(name), runtime.CAPTURE_DIR, claim)}",
        f"--legacy-directory={claim}",
        *runtime.capture_options(spec.capture),
        f"--seconds-per-file={CAPTURE_SECONDS_PER_FILE}",
    ]


def monitor_run(
    state: State, monitor: Mapping[str, Any], spec: DriftMonitorSpec, inputs: driftmonitor.Inputs
) -> runtime.MonitorRun:
    run = driftmonitor.monitor_run(owner(monitor), spec, inputs)
    captures = state.volume(inputs.captures_claim)
    legacy = _mounted(run.legacy_captures_dir, runtime.CAPTURE_DIR, captures) if run.legacy_captures_dir else None
    return run.model_copy(
        update={
            "profile_path": _mounted(run.profile_path, runtime.REFERENCE_DIR, state.volume(inputs.reference_claim)),
            "captures_dir": _mounted(run.captures_dir, runtime.CAPTURE_DIR, captures),
            "legacy_captures_dir": legacy,
            "reports_dir": str(reports_dir(state, run.name)),
            "metrics_port": 0,
            "report_port": 0,
            "status_file": str(state.workload_status_file(DRIFT_MONITOR, run.name).path),
        }
    )


def reports_dir(state: State, monitor: str) -> Path:
    return state.root / "reports" / monitor
