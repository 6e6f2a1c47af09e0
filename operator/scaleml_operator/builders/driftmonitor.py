"""DriftMonitor -> the monitor's Deployment, Service, ServiceAccount, and a RoleBinding for its own status.

One monitor pod per DriftMonitor (the Deployment recreates rather than surges): two would test the
same windows twice and announce the same drift twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from scaleml_api import runtime
from scaleml_api.conditions import Waiting
from scaleml_api.repository import PROFILE_FILE
from scaleml_api.v1alpha1.driftmonitor import (
    CAPTURE_DISABLED,
    MODEL_DEPLOYMENT_NOT_FOUND,
    TRAINING_JOB_NOT_FOUND,
    WAITING_FOR_MODEL,
    DriftMonitorSpec,
    RetrainPolicy,
)
from scaleml_operator.builders import meta
from scaleml_operator.builders.meta import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    Owner,
    labels,
    metadata,
)
from scaleml_operator.builders.modeldeployment import ModelSource

COMPONENT: Final = "scaleml-monitor"
# The ClusterRole (installed with the operator, rbac.yaml) its pod is bound to.
STATUS_ROLE: Final = "scaleml-monitor-status"
# The reference a monitor Deployment was built to read; the operator rebuilds it when that moves.
REFERENCE_ANNOTATION: Final = "scaleml.dev/reference"
CONTAINER: Final = "monitor"
RESOURCES: Final = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}


@dataclass(frozen=True)
class Inputs:
    """What the monitor reads: the captures' claim, the reference profile's claim, path and model version, and the
    model whose captured rows it reads (None: every model's)."""

    captures_claim: str
    reference_claim: str
    profile_path: str
    reference_version: int | None
    model_name: str | None


def monitor_name(name: str) -> str:
    return f"{name}-monitor"


def resolve_inputs(
    spec: DriftMonitorSpec,
    model_deployment: Mapping[str, Any] | None,
    training_job: Mapping[str, Any] | None,
    served: ModelSource | None = None,
) -> Inputs | Waiting:
    """The claims and the profile to read; `training_job` is the one `reference.fromTrainingJob` names,
    `served` the model the ModelDeployment's Deployment serves (see modeldeployment.served_model).

    The reference follows the served model: a retrained version was trained on other data, so live
    traffic is compared with that version's profile once it serves. When the TrainingJob is gone
    (its ttlSecondsAfterFinished ran out), the profile is the served version's, beside it.

    The monitor reads the rows of the reference's model (the one whose profile it is); with a
    reference by path, of the model the target serves, when that is known yet.
    """
    target = spec.target.model_deployment
    if model_deployment is None:
        return Waiting(MODEL_DEPLOYMENT_NOT_FOUND, f"ModelDeployment {target} does not exist (yet).")
    capture = model_deployment["spec"].get("capture") or {}
    if not capture.get("enabled") or not capture.get("volumeClaim"):
        return Waiting(CAPTURE_DISABLED, f"ModelDeployment {target} does not capture requests (spec.capture).")
    if not spec.reference.from_training_job:
        repository = model_deployment["spec"].get("model", {}).get("repository") or {}
        model_name = repository.get("modelName") or (served.model_name if served is not None else None)
        return Inputs(capture["volumeClaim"], spec.reference.volume_claim, spec.reference.path, None, model_name)
    name = spec.reference.from_training_job
    serving = (model_deployment.get("status") or {}).get("servedVersion")
    if training_job is not None:
        output = training_job["spec"]["output"]
        claim, model = output["volumeClaim"], output["modelName"]
        version = serving or (training_job.get("status") or {}).get("modelVersion")
    elif served is not None:
        claim, model, version = served.volume_claim, served.model_name, serving or served.version
    else:
        return Waiting(TRAINING_JOB_NOT_FOUND, f"TrainingJob {name} does not exist (yet).")
    if not version:
        return Waiting(WAITING_FOR_MODEL, f"Neither ModelDeployment {target} nor TrainingJob {name} has a version yet.")
    return Inputs(capture["volumeClaim"], claim, f"{model}/{version}/{PROFILE_FILE}", int(version), model)


def monitor_run(owner: Owner, spec: DriftMonitorSpec, inputs: Inputs) -> runtime.MonitorRun:
    """The monitor's run: the spec without `retrain`, which the operator alone reads (builders/retraining.py).

    A change to the retraining policy then leaves the config, and so the pod, as it was: the
    Deployment recreates its pod, and a restart would leave a gap in the monitoring.

    The monitor reads its target's own directory of captures, and, while files of the layout
    before it are left at the claim's root, those too: the rows of its model only, which tell
    them apart from other models' there (without a model to go by, it leaves them out).
    """
    return runtime.MonitorRun(
        namespace=owner.namespace,
        name=owner.name,
        spec=spec.model_copy(update={"retrain": RetrainPolicy()}),
        profile_path=f"{runtime.REFERENCE_DIR}/{inputs.profile_path}",
        model_version=inputs.reference_version,
        model_name=inputs.model_name,
        captures_dir=runtime.capture_dir(spec.target.model_deployment),
        legacy_captures_dir=runtime.CAPTURE_DIR if inputs.model_name else None,
    )


def run_config(owner: Owner, spec: DriftMonitorSpec, inputs: Inputs) -> meta.RunConfig:
    return meta.RunConfig.of(monitor_name(owner.name), monitor_run(owner, spec, inputs))


def pod_template(owner: Owner, spec: DriftMonitorSpec, inputs: Inputs, image: str) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/healthz", "port": "report"}, "periodSeconds": 10, "failureThreshold": 3}
    config = run_config(owner, spec, inputs)
    container = {
        "name": CONTAINER,
        "image": image,
        "command": ["python", "-m", "scaleml_workloads.monitor", *config.arguments],
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": runtime.SCRATCH_DIR},
            # The monitor computes on CPU, and requests no GPU.
            *meta.env(meta.NO_GPUS),
        ],
        "ports": [
            {"name": "metrics", "containerPort": runtime.METRICS_PORT},
            {"name": "report", "containerPort": runtime.REPORT_PORT},
        ],
        "readinessProbe": probe,
        "livenessProbe": probe,
        "resources": RESOURCES,
        "volumeMounts": [
            {"name": "captures", "mountPath": runtime.CAPTURE_DIR, "readOnly": True},
            {"name": "reference", "mountPath": runtime.REFERENCE_DIR, "readOnly": True},
            {"name": "reports", "mountPath": runtime.REPORTS_DIR},
            {"name": "scratch", "mountPath": runtime.SCRATCH_DIR},
            config.mount,
        ],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "metadata": {
            "labels": labels(owner, COMPONENT),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(runtime.METRICS_PORT),
                meta.CONFIG_HASH_ANNOTATION: config.digest,
            },
        },
        "spec": {
            "serviceAccountName": monitor_name(owner.name),
            "securityContext": POD_SECURITY_CONTEXT,
            "containers": [container],
            "volumes": [
                {"name": "captures", "persistentVolumeClaim": {"claimName": inputs.captures_claim, "readOnly": True}},
                {
                    "name": "reference",
                    "persistentVolumeClaim": {"claimName": inputs.reference_claim, "readOnly": True},
                },
                {"name": "reports", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "scratch", "emptyDir": {"sizeLimit": meta.SCRATCH_SIZE}},
                config.volume,
            ],
        },
    }


def reference(inputs: Inputs) -> str:
    """What the monitor reads as its reference: a Deployment annotated otherwise is stale."""
    return f"{inputs.reference_claim}/{inputs.profile_path}"


def deployment(owner: Owner, spec: DriftMonitorSpec, inputs: Inputs, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **metadata(owner, monitor_name(owner.name), COMPONENT),
            "annotations": {REFERENCE_ANNOTATION: reference(inputs)},
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels(owner, COMPONENT)},
            "template": pod_template(owner, spec, inputs, image),
        },
    }


def service(owner: Owner) -> dict[str, Any]:
    ports = [
        {"name": "metrics", "port": runtime.METRICS_PORT, "targetPort": "metrics", "appProtocol": "http"},
        {"name": "report", "port": runtime.REPORT_PORT, "targetPort": "report", "appProtocol": "http"},
    ]
    return meta.service(owner, monitor_name(owner.name), COMPONENT, ports)


def identity(owner: Owner) -> list[dict[str, Any]]:
    """The monitor's ServiceAccount, bound to report on its own DriftMonitor and announce drift in Events."""
    return meta.identity(owner, monitor_name(owner.name), COMPONENT, STATUS_ROLE)


def children(
    owner: Owner,
    spec: DriftMonitorSpec,
    inputs: Inputs | None,
    image: str,
    *,
    retraining_job: dict[str, Any] | None = None,
) -> meta.Children:
    """Every child in the order to apply them; the Deployment only once there is something to read.

    A retraining TrainingJob is created, never applied: it is not the monitor's to own or update.
    """
    objects = [*identity(owner), service(owner)]
    if inputs is not None:
        objects += [
            run_config(owner, spec, inputs).config_map(owner, COMPONENT),
            deployment(owner, spec, inputs, image),
        ]
    return meta.Children(apply=objects, create=[retraining_job] if retraining_job is not None else [])
