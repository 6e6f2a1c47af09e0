"""TrainingJob -> ServiceAccount, RoleBinding, headless Service, run config and an Indexed batch Job.

Why an Indexed Job rather than bare pods: the Job controller already gives stable per-index pod
hostnames for rendezvous, retries with a backoff limit per index (per worker), a podFailurePolicy,
activeDeadlineSeconds and suspend (which Kueue uses to admit workloads).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from scaleml_api import runtime
from scaleml_api.v1alpha1.pods import GPU_TOLERATION, TORCHRUN_ENV
from scaleml_api.v1alpha1.trainingjob import RunPolicy, TrainingJobSpec
from scaleml_operator.builders import meta
from scaleml_operator.builders.meta import (
    CONTAINER_SECURITY_CONTEXT,
    POD_SECURITY_CONTEXT,
    Owner,
    labels,
    metadata,
)

COMPONENT: Final = "scaleml-trainer"
CONTAINER: Final = "trainer"
# The ClusterRole (installed with the operator, rbac.yaml) its workers are bound to.
STATUS_ROLE: Final = "scaleml-trainer-status"
CHECK_CONTAINER: Final = "check"
TEMPLATE_HASH: Final = "scaleml.dev/pod-template-hash"
# The generation of the TrainingJob's spec the Job's fixed fields were made from: when they differ
# from what the operator renders now for the same generation, the operator changed (an upgrade, a
# new --workload-image), not the spec, and the running Job keeping its own is no refusal of the spec.
SPEC_GENERATION: Final = "scaleml.dev/spec-generation"
KUEUE_QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
# Exit codes that mean "the program or its input is wrong": retrying cannot help.
USER_ERROR_EXIT_CODES: Final = (1, runtime.EXIT_INVALID_INPUT, 126, 127)
# The Job-wide count of failed pods is not limited: each worker's own count (backoffLimitPerIndex)
# decides. Kubernetes defaults it so next to a per-index limit; written out, the Job as it runs
# matches the one desired.
UNLIMITED_JOB_FAILURES: Final = 2**31 - 1
SHM_SIZE: Final = "2Gi"


def service_name(job: str) -> str:
    return f"{job}-workers"


def service_account_name(job: str) -> str:
    return f"{job}-trainer"


def rendezvous_endpoint(owner: Owner) -> str:
    # Pods of an Indexed Job with a subdomain resolve as <job>-<index>.<subdomain>.
    return f"{owner.name}-0.{service_name(owner.name)}.{owner.namespace}.svc:{runtime.RENDEZVOUS_PORT}"


def torchrun_command(owner: Owner, spec: TrainingJobSpec) -> list[str]:
    nnodes = f"{spec.elastic.min_workers}:{spec.elastic.max_workers}" if spec.elastic else str(spec.resources.workers)
    # Without elastic membership a failed pod is replaced by the Job controller and resumes from
    # its checkpoint; restarting the whole group in place would only repeat the failure.
    max_restarts = spec.elastic.max_restarts if spec.elastic else 0
    return [
        "python",
        "-m",
        "scaleml_workloads.training.launch",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={spec.resources.processes_per_worker}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rendezvous_endpoint(owner)}",
        f"--rdzv-id={owner.uid}",
        # Pods start at different times (image pulls, scheduling): give them time to meet.
        "--rdzv-conf=join_timeout=900",
        f"--max-restarts={max_restarts}",
        "-m",
        "scaleml_workloads.training",
    ]


def training_run(owner: Owner, spec: TrainingJobSpec, lineage: runtime.Lineage | None = None) -> runtime.TrainingRun:
    # The run policy is the Job's business, not the pods': left out, changing it (suspend, say)
    # leaves the pod template as it is.
    return runtime.TrainingRun(
        namespace=owner.namespace,
        name=owner.name,
        spec=spec.model_copy(update={"run_policy": RunPolicy()}),
        # One directory per TrainingJob object: jobs share a claim, and a TrainingJob recreated
        # under the same name (perhaps with another model) must not resume its predecessor.
        checkpoint_dir=f"{runtime.CHECKPOINT_DIR}/{owner.name}-{owner.uid}" if spec.checkpoint else None,
        lineage=lineage,
    )


def _resources(spec: TrainingJobSpec, *, gpus: bool = True) -> dict[str, Any]:
    return meta.guaranteed(spec.resources.cpu, spec.resources.memory, spec.resources.gpus_per_worker if gpus else 0)


def _volumes(spec: TrainingJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": spec.data.volume_claim, "readOnly": True}},
        {"name": "output", "persistentVolumeClaim": {"claimName": spec.output.volume_claim}},
        # DataLoader workers pass batches through shared memory; the default 64 MiB is too small.
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "data", "mountPath": runtime.DATA_DIR, "readOnly": True},
        {"name": "output", "mountPath": runtime.OUTPUT_DIR},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": runtime.SCRATCH_DIR},
    ]
    if spec.checkpoint:
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": spec.checkpoint.volume_claim}})
        mounts.append({"name": "checkpoints", "mountPath": runtime.CHECKPOINT_DIR})
    return volumes, mounts


def covers(toleration: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether `toleration` tolerates every taint that `other` does (Kubernetes' matching of a toleration).

    An empty key with Exists matches every key, an empty effect every effect; Exists matches any
    value, Equal only its own.
    """
    key, operator = toleration.get("key", ""), toleration.get("operator", "Equal")
    if key and key != other.get("key", ""):
        return False
    if operator != "Exists" and (
        other.get("operator", "Equal") == "Exists" or toleration.get("value", "") != other.get("value", "")
    ):
        return False
    return toleration.get("effect", "") in ("", other.get("effect", ""))


def _tolerations(spec: TrainingJobSpec) -> list[dict[str, Any]]:
    """The user's tolerations, and with GPUs the GPU taint's unless one of them already tolerates it all.

    A user toleration of the same key for another effect (NoExecute with tolerationSeconds, say)
    leaves the pods unable to schedule onto nodes tainted nvidia.com/gpu:NoSchedule without it.
    """
    tolerations = [t.to_wire() for t in spec.scheduling.tolerations]
    if spec.resources.gpus_per_worker and not any(covers(t, GPU_TOLERATION) for t in tolerations):
        tolerations.append(dict(GPU_TOLERATION))
    return tolerations


def run_config(owner: Owner, spec: TrainingJobSpec, lineage: runtime.Lineage | None = None) -> meta.RunConfig:
    return meta.RunConfig.of(service_account_name(owner.name), training_run(owner, spec, lineage))


def pod_template(
    owner: Owner, spec: TrainingJobSpec, image: str, lineage: runtime.Lineage | None = None
) -> dict[str, Any]:
    config = run_config(owner, spec, lineage)
    volumes, mounts = _volumes(spec)
    volumes.append(config.volume)
    mounts.append(config.mount)
    defaults = {
        "PYTHONUNBUFFERED": "1",
        # The root filesystem is read-only: caches and home go to the scratch volume.
        "HOME": runtime.SCRATCH_DIR,
        "TORCHINDUCTOR_CACHE_DIR": f"{runtime.SCRATCH_DIR}/inductor",
        # Workers without GPUs train on CPU (gloo), whatever the node has.
        **({} if spec.resources.gpus_per_worker else meta.NO_GPUS),
    }
    # The user's value of a default replaces it: a name twice in a container's env is refused.
    for variable in spec.env:
        defaults.pop(variable.name, None)
    env = [
        *meta.env({**defaults, **TORCHRUN_ENV}),
        *(e.to_wire() for e in spec.env),
    ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "subdomain": service_name(owner.name),
        "serviceAccountName": service_account_name(owner.name),
        "securityContext": POD_SECURITY_CONTEXT,
        # torchrun reports any failed worker as its own exit code 1, so bad input is caught first,
        # outside torchrun, where its exit code (2) and message reach the Job and the status.
        "initContainers": [
            {
                "name": CHECK_CONTAINER,
                "image": image,
                "command": ["python", "-m", "scaleml_workloads.training", "--check", *config.arguments],
                "env": env,
                "resources": _resources(spec, gpus=False),
                "volumeMounts": mounts,
                "securityContext": CONTAINER_SECURITY_CONTEXT,
                "terminationMessagePath": runtime.TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "containers": [
            {
                "name": CONTAINER,
                "image": image,
                "command": [*torchrun_command(owner, spec), *config.arguments],
                "env": env,
                "ports": [
                    {"name": "rendezvous", "containerPort": runtime.RENDEZVOUS_PORT},
                    {"name": "metrics", "containerPort": runtime.METRICS_PORT},
                ],
                "resources": _resources(spec),
                "volumeMounts": mounts,
                "securityContext": CONTAINER_SECURITY_CONTEXT,
                "terminationMessagePath": runtime.TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    if spec.scheduling.node_selector:
        pod_spec["nodeSelector"] = dict(spec.scheduling.node_selector)
    if tolerations := _tolerations(spec):
        pod_spec["tolerations"] = tolerations
    if spec.scheduling.priority_class_name:
        pod_spec["priorityClassName"] = spec.scheduling.priority_class_name
    return {
        "metadata": {
            "labels": {**spec.pod_metadata.labels, **labels(owner, COMPONENT)},
            "annotations": {
                **spec.pod_metadata.annotations,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(runtime.METRICS_PORT),
                meta.CONFIG_HASH_ANNOTATION: config.digest,
            },
        },
        "spec": pod_spec,
    }


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def batch_job(
    owner: Owner, spec: TrainingJobSpec, image: str, lineage: runtime.Lineage | None = None
) -> dict[str, Any]:
    template = pod_template(owner, spec, image, lineage)
    meta = metadata(owner, owner.name, COMPONENT)
    meta["annotations"] = {TEMPLATE_HASH: template_hash(template)}
    if owner.generation is not None:
        meta["annotations"][SPEC_GENERATION] = str(owner.generation)
    if spec.scheduling.queue_name:
        meta["labels"][KUEUE_QUEUE_LABEL] = spec.scheduling.queue_name
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.resources.workers,
        "parallelism": spec.resources.workers,
        # runPolicy.backoffLimit counts each worker's failures, not the Job's. Without elastic, one
        # worker that goes ends the group: every other exits runtime.EXIT_INTERRUPTED and is replaced
        # too, so a Job-wide count would spend N-1 on one preempted worker of N. Per worker, a restart
        # of the group costs each worker one, whatever N; a worker that fails alone again and again
        # (out of memory, say, while elastic peers restart in place) runs out of its own. And the Job
        # controller then waits before replacing a worker by that worker's failures (10 s, doubling),
        # not the whole Job's, which reach its 10-minute ceiling after one restart of eight workers.
        "backoffLimitPerIndex": spec.run_policy.backoff_limit,
        # One worker out of retries fails the Job: the group cannot finish without it.
        "maxFailedIndexes": 0,
        "backoffLimit": UNLIMITED_JOB_FAILURES,
        "suspend": spec.run_policy.suspend,
        # A pod that no rule matches is retried and counted (the action Count): runtime.EXIT_INTERRUPTED,
        # a crash, and 137 and 143, the codes of a container killed, among others by the kernel's OOM
        # killer: ignored, a worker that runs out of memory would be retried for ever. What stops a pod
        # from outside (preemption, eviction, a drain, taint-based eviction, node shutdown, a lost node)
        # marks it DisruptionTarget, which no exit code needs to stand for.
        "podFailurePolicy": {
            "rules": [
                # First, as the first rule that matches decides: whatever a disrupted pod's program
                # exited with as it was stopped, the disruption ended it.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                # No containerName: the rule covers the check init container too.
                {"action": "FailJob", "onExitCodes": {"operator": "In", "values": list(USER_ERROR_EXIT_CODES)}},
            ]
        },
        "template": template,
    }
    if spec.run_policy.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.run_policy.active_deadline_seconds
    if spec.run_policy.ttl_seconds_after_finished is not None:
        # Kubernetes' TTL controller deletes the finished Job; the operator then deletes the
        # TrainingJob, so no timer of ours has to survive restarts.
        job_spec["ttlSecondsAfterFinished"] = spec.run_policy.ttl_seconds_after_finished
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}


def headless_service(owner: Owner) -> dict[str, Any]:
    ports = [{"name": "rendezvous", "port": runtime.RENDEZVOUS_PORT, "targetPort": "rendezvous"}]
    # Not-ready addresses published: workers must find each other before any of them is ready.
    return meta.service(
        owner, service_name(owner.name), COMPONENT, ports, clusterIP="None", publishNotReadyAddresses=True
    )


def identity(owner: Owner) -> list[dict[str, Any]]:
    """The workers' ServiceAccount, bound to report progress on their own TrainingJob and nothing else."""
    return meta.identity(owner, service_account_name(owner.name), COMPONENT, STATUS_ROLE)


def children(
    owner: Owner,
    spec: TrainingJobSpec,
    image: str,
    *,
    live_job: Mapping[str, Any] | None = None,
    lineage: runtime.Lineage | None = None,
    finished: bool = False,
) -> meta.Children:
    """Every object a TrainingJob needs, in the order to apply them (the Job last).

    `live_job` is the Job as it runs: what of the spec cannot reach it is kept back and named.
    `lineage` says which drift episode created the job, for its model card. A `finished` TrainingJob
    whose Job is gone (deleted by hand, or its time to live was up while nobody watched) gets no
    new one: that would train again, and export a version nobody asked for.
    """
    desired = batch_job(owner, spec, image, lineage)
    if finished and live_job is None:
        job, kept_back = None, ""
    else:
        job, kept_back = job_to_apply(desired, dict(live_job) if live_job is not None else None)
    objects = [*identity(owner), headless_service(owner)]
    if job is not None and not kept_back:
        # A Job kept as it runs (or finished) keeps the config its pods read.
        objects.append(run_config(owner, spec, lineage).config_map(owner, COMPONENT))
    return meta.Children(apply=[*objects, *([job] if job is not None else [])], kept_back=kept_back)


# Fields of a Job that stay as they are once it exists: its pods and size (the API server refuses
# a new template, and torchrun's group size is in it), its pod failure policy and per-worker limit
# (refused too), and the Job-wide limits that go with the per-worker one (a Job made by an earlier
# release has none, and counts failures Job-wide).
_FIXED_JOB_FIELDS: Final = (
    "template",
    "completions",
    "completionMode",
    "parallelism",
    "podFailurePolicy",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "backoffLimit",
)


def job_finished(job: Mapping[str, Any]) -> bool:
    """Whether a Job completed or failed for good."""
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in job.get("status", {}).get("conditions") or ()
    )


def job_to_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """The Job manifest to apply given the live Job, and what of the spec could not be applied.

    A Job's pod template, size and failure policy (runPolicy.backoffLimit among it) are fixed once it
    exists: such changes are kept out, while suspend and the deadline still reach it. A finished Job
    is left alone. What is kept out is named when the spec changed since the Job was made; when the
    spec is the one the Job was made from, the operator renders it differently now (a new release,
    another workload image), and the running Job finishes as it started, with nothing to report.
    """
    if live is None:
        return desired, ""
    if job_finished(live):
        return None, ""
    live_hash = live.get("metadata", {}).get("annotations", {}).get(TEMPLATE_HASH)
    changed = [
        name
        for name in _FIXED_JOB_FIELDS
        if (name == "template" and live_hash != desired["metadata"]["annotations"][TEMPLATE_HASH])
        or (name != "template" and live["spec"].get(name) != desired["spec"].get(name))
    ]
    if not changed:
        return desired, ""
    kept = json.loads(json.dumps(desired))
    for name in _FIXED_JOB_FIELDS:
        if name in live["spec"]:
            kept["spec"][name] = live["spec"][name]
        elif name != "template":
            # Absent from the running Job, absent from what is applied: a Job made before per-worker
            # limits keeps counting Job-wide (and the API server refuses maxFailedIndexes without
            # them). Not the template: the cache keeps Jobs without theirs (a run that applies reads
            # the Job whole), and the desired one stands in.
            kept["spec"].pop(name, None)
    annotations = kept["metadata"]["annotations"]
    annotations[TEMPLATE_HASH] = live_hash
    made_for = live.get("metadata", {}).get("annotations", {}).get(SPEC_GENERATION)
    # The generation the fixed fields were made from stays with them (a Job of an earlier release has none).
    annotations.pop(SPEC_GENERATION, None)
    if made_for is not None:
        annotations[SPEC_GENERATION] = made_for
    if _same_spec(made_for, desired):
        return kept, ""
    fields = ", ".join(f"spec.{name}" for name in changed)
    return kept, (
        f"The running Job keeps its {fields}: a started Job's pods, size and failure policy cannot change. "
        "Create a new TrainingJob to run with the new spec (model.initFrom warm-starts it from an exported version)."
    )


def _same_spec(made_for: str | None, desired: Mapping[str, Any]) -> bool:
    """Whether the spec the Job was made from is the TrainingJob's current one. A Job made before the
    generation was recorded was made from the first when the spec never changed (generation 1)."""
    now = desired["metadata"]["annotations"].get(SPEC_GENERATION)
    return now is not None and (made_for or "1") == now
