"""ModelDeployment -> Triton Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget.

Each pod runs three containers: the model agent (a native sidecar that builds Triton's repository
from the exported versions and holds Triton back until a version is there), Triton itself, and,
with capture on, the capture converter (a native sidecar too, which stops after Triton and turns
the traces of the requests Triton sampled into capture files, in the ModelDeployment's own
directory on the capture claim, which others may share). Clients call Triton directly
either way. The version to serve is part of the pod template: a new version rolls the
Deployment, one pod at a time, never below the desired number of ready pods.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from scaleml_api import runtime
from scaleml_api.base import quantity_value
from scaleml_api.conditions import Waiting
from scaleml_api.repository import EXPLAIN_SUFFIX
from scaleml_api.v1alpha1.modeldeployment import (
    MODEL_ANNOTATION,
    MODEL_VERSION_ANNOTATION,
    TRAINING_JOB_NOT_FOUND,
    TRITON_CONTAINER,
    WAITING_FOR_MODEL,
    ModelDeploymentSpec,
    Promotion,
)
from scaleml_api.v1alpha1.pods import GPU_TOLERATION
from scaleml_operator.builders import meta
from scaleml_operator.builders.meta import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    Owner,
    labels,
    metadata,
)

COMPONENT: Final = "scaleml-triton"
# Triton's repository of links and configs; and the trace files a client's requests make, four times
# what the converter lets wait (--max-backlog-mib), for the time the converter is restarting. Both
# bounded as meta.SCRATCH_SIZE is.
SERVING_SIZE: Final = "1Gi"
TRACES_SIZE: Final = "1Gi"
AGENT_CONTAINER: Final = "model-agent"
CAPTURE_CONTAINER: Final = "capture"
# Endpoints controllers and load balancers need a moment to stop sending to a terminating pod.
DRAIN_SECONDS: Final = 10
SHM_SIZE: Final = "1Gi"
# The agent waits this long for a first version before its startup probe gives up on the pod.
FIRST_VERSION_WAIT_SECONDS: Final = 3600
MODEL_LOAD_SECONDS: Final = 600
SIDECAR_RESOURCES: Final = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}
CAPTURE_RESOURCES: Final = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


@dataclass(frozen=True)
class ModelSource:
    """Where the versions of the served model are: a claim, the model directory in it, and the version."""

    volume_claim: str
    model_name: str
    # None: follow the newest version (the agent picks it up in place).
    version: int | None

    @property
    def model(self) -> str:
        """The model, whatever its version: what the Deployment's MODEL_ANNOTATION says it serves."""
        return f"{self.volume_claim}/{self.model_name}"


def deployment_name(name: str) -> str:
    return f"{name}-triton"


def service_name(name: str) -> str:
    return name


def endpoints(owner: Owner) -> dict[str, str]:
    host = f"{service_name(owner.name)}.{owner.namespace}.svc"
    return {"http": f"http://{host}:{runtime.TRITON_HTTP_PORT}", "grpc": f"{host}:{runtime.TRITON_GRPC_PORT}"}


def selector(owner: Owner) -> dict[str, str]:
    return labels(owner, COMPONENT)


def serving_run(owner: Owner, spec: ModelDeploymentSpec, source: ModelSource) -> runtime.ServingRun:
    """The agent's run: the spec without what only the operator reads, so that changing it rolls no pod.

    Left at their defaults: the replica counts (the Deployment's and the HPA's business), the
    promotion gates (the operator judges versions; the pods serve the one it resolved), and the
    model's version (resolved into `version`, and so "latest" and a pin of the served version are
    one config). The agent reads the rest of the spec (serving/agent.py, serving/config.py).
    """
    served = spec.model_copy(
        update={
            "replicas": 1,
            "autoscaling": None,
            "promotion": Promotion(),
            "model": spec.model.model_copy(update={"version": "latest"}),
        }
    )
    return runtime.ServingRun(
        namespace=owner.namespace,
        name=owner.name,
        spec=served,
        model_name=source.model_name,
        source_dir=f"{runtime.REPOSITORY_DIR}/{source.model_name}",
        version=source.version,
    )


def _http_probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _agent(spec: ModelDeploymentSpec, owner: Owner, source: ModelSource, image: str) -> dict[str, Any]:
    return {
        "name": AGENT_CONTAINER,
        "image": image,
        # A native sidecar: it runs for the pod's life, and Triton starts once its startup probe passes.
        "restartPolicy": "Always",
        "command": ["python", "-m", "scaleml_workloads.serving.agent"],
        "env": [
            {"name": runtime.CONFIG_ENV, "value": serving_run(owner, spec, source).model_dump_json(by_alias=True)},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "ports": [{"name": "agent-health", "containerPort": runtime.AGENT_HEALTH_PORT}],
        "startupProbe": _http_probe("/healthz", "agent-health", 2, FIRST_VERSION_WAIT_SECONDS // 2),
        "livenessProbe": _http_probe("/healthz", "agent-health", 10, 3),
        "resources": SIDECAR_RESOURCES,
        "volumeMounts": [
            {"name": "repository", "mountPath": runtime.REPOSITORY_DIR, "readOnly": True},
            {"name": "serving", "mountPath": runtime.SERVING_DIR},
        ],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }


def _capture(spec: ModelDeploymentSpec, owner: Owner, source: ModelSource, image: str) -> dict[str, Any]:
    return {
        "name": CAPTURE_CONTAINER,
        "image": image,
        # A native sidecar: it stops after Triton, so it still reads the traces Triton writes as it exits.
        "restartPolicy": "Always",
        "command": [
            "python",
            "-m",
            "scaleml_workloads.capture",
            f"--traces={runtime.TRACE_DIR}",
            f"--metrics-port={runtime.CAPTURE_METRICS_PORT}",
            # The claim may be shared: this ModelDeployment's files go into a directory of its own.
            f"--directory={runtime.capture_dir(owner.name)}",
            # Files of the layout before that, at the claim's root, are swept as they were until none is left.
            f"--legacy-directory={runtime.CAPTURE_DIR}",
            *runtime.capture_options(spec.capture),
            # Triton traces every model it serves: requests for explanations are no traffic to monitor.
            *([f"--skip-model={source.model_name}{EXPLAIN_SUFFIX}"] if spec.explain.enabled else []),
        ],
        # Files of several pods share the volume: the pod name keeps their names apart.
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
        ],
        "ports": [{"name": "capture-metrics", "containerPort": runtime.CAPTURE_METRICS_PORT}],
        "livenessProbe": {"tcpSocket": {"port": "capture-metrics"}, "periodSeconds": 10, "failureThreshold": 3},
        "resources": CAPTURE_RESOURCES,
        "volumeMounts": [
            {"name": "captures", "mountPath": runtime.CAPTURE_DIR},
            {"name": "traces", "mountPath": runtime.TRACE_DIR},
        ],
        "securityContext": CONTAINER_SECURITY_CONTEXT,
    }


def threads_per_instance(spec: ModelDeploymentSpec) -> int:
    """Intra-op threads of each model instance: the CPU limit shared among the instances.

    PyTorch and ONNX Runtime otherwise start one thread per core of the node, however small the
    limit, and a throttled pod answers many times slower.
    """
    return max(1, math.floor(quantity_value(str(spec.resources.cpu)) / spec.instances.count))


# Triton's management APIs take the admin key the model agent made for this pod (runtime.ADMIN_KEY_FILE);
# a shell reads it, as a command line cannot. Without the key Triton does not start.
_ADMIN_KEY_PATH: Final = f"{runtime.SERVING_DIR}/{runtime.ADMIN_KEY_FILE}"
_RESTRICTIONS: Final = " ".join(runtime.restricted_api_options('"$key"'))
# The python backend makes its stub executable (chmod) whenever it loads a model: on the container's
# read-only root, or with the image's files owned by another user than the pod's, that fails and no
# python-backend model loads. The pod's own copy of that backend, in its scratch volume, can be
# chmod-ed; the other backends are linked, not copied (libtorch's is gigabytes). Made anew at each
# start (a restarted container finds the last one's). An image without Triton's usual backend
# directory keeps its own default.
TRITON_BACKENDS: Final = "/opt/tritonserver/backends"
_STAGED_BACKENDS: Final = f"{runtime.SCRATCH_DIR}/backends"
_STAGE_BACKENDS: Final = (
    f"if [ -d {TRITON_BACKENDS}/python ]; then rm -rf {_STAGED_BACKENDS} && mkdir -p {_STAGED_BACKENDS} "
    f'&& for backend in {TRITON_BACKENDS}/*; do ln -s "$backend" {_STAGED_BACKENDS}/; done '
    f"&& rm {_STAGED_BACKENDS}/python && cp -R {TRITON_BACKENDS}/python {_STAGED_BACKENDS}/python "
    f'&& set -- "$@" --backend-directory={_STAGED_BACKENDS} || exit 1; fi; '
)
TRITON_SCRIPT: Final = (
    f'key="$(cat {_ADMIN_KEY_PATH})" && [ -n "$key" ] '
    f'|| {{ echo "no Triton admin key in {_ADMIN_KEY_PATH}: the model agent writes it" >&2; exit 1; }}; '
    f"{_STAGE_BACKENDS}"
    f'exec tritonserver "$@" {_RESTRICTIONS}'
)


def triton_command(spec: ModelDeploymentSpec) -> list[str]:
    """The Triton container's command: tritonserver with the pod's options and its management APIs restricted.

    With capture on, Triton traces the sampled requests into the pod's trace volume itself (a
    python-backend model writes them there instead: runtime.traced_by_triton).
    """
    tracing = runtime.trace_options(spec.capture, runtime.TRACE_DIR) if runtime.traced_by_triton(spec) else []
    return ["/bin/sh", "-c", TRITON_SCRIPT, "tritonserver", *runtime.triton_options(runtime.SERVING_DIR), *tracing]


def _triton(spec: ModelDeploymentSpec, image: str) -> dict[str, Any]:
    mounts = [
        {"name": "serving", "mountPath": runtime.SERVING_DIR, "readOnly": True},
        {"name": "repository", "mountPath": runtime.REPOSITORY_DIR, "readOnly": True},
        # The python backend passes tensors through shared memory.
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": runtime.SCRATCH_DIR},
    ]
    if spec.capture.enabled:
        mounts.append({"name": "traces", "mountPath": runtime.TRACE_DIR})
    return {
        "name": TRITON_CONTAINER,
        "image": image,
        "command": triton_command(spec),
        "env": [
            {"name": "HOME", "value": runtime.SCRATCH_DIR},
            {"name": "OMP_NUM_THREADS", "value": str(threads_per_instance(spec))},
            *meta.env({} if spec.resources.gpus else meta.NO_GPUS),
        ],
        "ports": [
            {"name": "http", "containerPort": runtime.TRITON_HTTP_PORT},
            {"name": "grpc", "containerPort": runtime.TRITON_GRPC_PORT},
            {"name": "metrics", "containerPort": runtime.TRITON_METRICS_PORT},
        ],
        "startupProbe": _http_probe("/v2/health/ready", "http", 5, MODEL_LOAD_SECONDS // 5),
        "readinessProbe": _http_probe("/v2/health/ready", "http", 5, 2),
        "livenessProbe": _http_probe("/v2/health/live", "http", 10, 3),
        # Requests already routed here still arrive for a moment after the pod starts terminating.
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "resources": meta.guaranteed(spec.resources.cpu, spec.resources.memory, spec.resources.gpus),
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def pod_template(
    owner: Owner, spec: ModelDeploymentSpec, source: ModelSource, images: tuple[str, str]
) -> dict[str, Any]:
    """`images` is (Triton's image, the workload image of the agent and the capture converter)."""
    triton_image, workload_image = images
    sidecars = [_agent(spec, owner, source, workload_image)]
    volumes: list[dict[str, Any]] = [
        {"name": "repository", "persistentVolumeClaim": {"claimName": source.volume_claim, "readOnly": True}},
        {"name": "serving", "emptyDir": {"sizeLimit": SERVING_SIZE}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        {"name": "scratch", "emptyDir": {"sizeLimit": meta.SCRATCH_SIZE}},
    ]
    if spec.capture.enabled:
        sidecars.append(_capture(spec, owner, source, workload_image))
        volumes += [
            {"name": "captures", "persistentVolumeClaim": {"claimName": spec.capture.volume_claim}},
            # Triton's trace files until the converter has read them; it keeps them under --max-backlog-mib.
            {"name": "traces", "emptyDir": {"sizeLimit": TRACES_SIZE}},
        ]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "initContainers": sidecars,
        "containers": [_triton(spec, triton_image)],
        "volumes": volumes,
        # Drain, then Triton's own wait for in-flight requests.
        "terminationGracePeriodSeconds": DRAIN_SECONDS + runtime.EXIT_TIMEOUT_SECONDS + 5,
    }
    if spec.resources.gpus:
        pod_spec["tolerations"] = [dict(GPU_TOLERATION)]
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(runtime.TRITON_METRICS_PORT),
    }
    if source.version is not None:
        annotations[MODEL_VERSION_ANNOTATION] = str(source.version)
    return {"metadata": {"labels": selector(owner), "annotations": annotations}, "spec": pod_spec}


def deployment(owner: Owner, spec: ModelDeploymentSpec, source: ModelSource, images: tuple[str, str]) -> dict[str, Any]:
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(owner)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": MODEL_LOAD_SECONDS,
        "template": pod_template(owner, spec, source, images),
    }
    if spec.autoscaling is None:
        # With an autoscaler the HPA owns the replica count; applying one here would fight it.
        deployment_spec["replicas"] = spec.replicas
    meta = metadata(owner, deployment_name(owner.name), COMPONENT)
    meta["annotations"] = {MODEL_ANNOTATION: source.model}
    if source.version is not None:
        meta["annotations"][MODEL_VERSION_ANNOTATION] = str(source.version)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": deployment_spec}


def service(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any]:
    # Clients call Triton itself, capture on or off: Triton traces the sample the capture keeps.
    ports = [
        {"name": "http", "port": runtime.TRITON_HTTP_PORT, "targetPort": "http", "appProtocol": "http"},
        {"name": "grpc", "port": runtime.TRITON_GRPC_PORT, "targetPort": "grpc", "appProtocol": "kubernetes.io/h2c"},
        {"name": "metrics", "port": runtime.TRITON_METRICS_PORT, "targetPort": "metrics", "appProtocol": "http"},
    ]
    if spec.capture.enabled:
        ports.append(
            {
                "name": "capture-metrics",
                "port": runtime.CAPTURE_METRICS_PORT,
                "targetPort": "capture-metrics",
                "appProtocol": "http",
            }
        )
    return meta.service(owner, service_name(owner.name), COMPONENT, ports, type="ClusterIP")


def autoscaler(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """The HPA, or None when autoscaling is off (an existing one is then deleted)."""
    if spec.autoscaling is None:
        return None
    metrics: list[dict[str, Any]] = []
    if spec.autoscaling.target_cpu_utilization > 0:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": spec.autoscaling.target_cpu_utilization},
                },
            }
        )
    metrics.extend(metric.to_wire() for metric in spec.autoscaling.metrics)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, owner.name, COMPONENT),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(owner.name)},
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": metrics,
        },
    }


def disruption_budget(owner: Owner, spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """A PDB keeping all but one pod through voluntary disruptions; None with at most one replica."""
    fewest = spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas
    if fewest <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, owner.name, COMPONENT),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector(owner)},
            # A pod that never became ready may go, or a bad rollout could block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def children(
    owner: Owner,
    spec: ModelDeploymentSpec,
    source: ModelSource | None,
    images: tuple[str, str],
    live: Mapping[str, Any] | None = None,
) -> meta.Children:
    """Every child; the Deployment only once there is a source to serve (a TrainingJob may not have exported yet).

    The autoscaler comes after the Deployment, never without it: it scales whatever Deployment has
    the name, and one of that name that the operator did not make is reported, not scaled. With an
    autoscaler, the `live` Deployment's replicas are handed over (see meta.Children.hand_over).
    """
    apply = [service(owner, spec)]
    absent: list[tuple[str, str, str]] = []
    hand_over = []
    if source is not None:
        apply.append(deployment(owner, spec, source, images))
        if spec.autoscaling is not None and live is not None and "replicas" in live.get("spec", {}):
            hand_over.append(_replicas_of(owner, live))
    for api_version, kind, manifest in (
        ("autoscaling/v2", "HorizontalPodAutoscaler", autoscaler(owner, spec)),
        ("policy/v1", "PodDisruptionBudget", disruption_budget(owner, spec)),
    ):
        if manifest is None:
            absent.append((api_version, kind, owner.name))
        elif source is not None or kind != "HorizontalPodAutoscaler":
            apply.append(manifest)
    return meta.Children(apply=apply, absent=absent, hand_over=hand_over)


def _replicas_of(owner: Owner, live: Mapping[str, Any]) -> dict[str, Any]:
    # Its uid: a Deployment deleted meanwhile is not created again from this fragment.
    name, uid = deployment_name(owner.name), live["metadata"]["uid"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": owner.namespace, "uid": uid},
        "spec": {"replicas": live["spec"]["replicas"]},
    }


def served_model(deployment: Mapping[str, Any]) -> ModelSource | None:
    """The model and version a ModelDeployment's Deployment was built to serve, from its annotations."""
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    claim, _, model = str(annotations.get(MODEL_ANNOTATION, "")).partition("/")
    version = str(annotations.get(MODEL_VERSION_ANNOTATION, ""))
    if not (claim and model and version.isdigit()):
        return None
    return ModelSource(claim, model, int(version))


def resolve_source(
    spec: ModelDeploymentSpec,
    training_job: Mapping[str, Any] | None,
    newest_exported: int | None,
    served: ModelSource | None = None,
) -> ModelSource | Waiting:
    """Where the model comes from. `training_job` is the one `model.fromTrainingJob` names; `newest_exported`
    the highest version any TrainingJob of the namespace exported into the same model directory (a
    retraining run writes the next version of the model it retrains); `served` what the Deployment
    serves (`served_model`), which goes on when that TrainingJob is gone."""
    pinned = spec.model.version if isinstance(spec.model.version, int) else None
    if spec.model.repository is not None:
        return ModelSource(spec.model.repository.volume_claim, spec.model.repository.model_name, pinned)
    name = spec.model.from_training_job
    if training_job is None:
        if served is None:
            return Waiting(TRAINING_JOB_NOT_FOUND, f"TrainingJob {name} does not exist (yet).")
        # It went (its ttlSecondsAfterFinished ran out, or someone deleted it) once its model served: the
        # versions exported stay, so the model does, and follows what retraining runs export into it.
        return replace(served, version=pinned or max(filter(None, (served.version, newest_exported)), default=None))
    output = training_job["spec"]["output"]
    own = (training_job.get("status") or {}).get("modelVersion")
    version = pinned or max(filter(None, (own, newest_exported)), default=None)
    if version is None:
        return Waiting(WAITING_FOR_MODEL, f"TrainingJob {name} has not exported a model version yet.")
    return ModelSource(output["volumeClaim"], output["modelName"], version)
