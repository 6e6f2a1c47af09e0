from __future__ import annotations

import json
from typing import Any

import pytest

from scaleml_api.runtime import EXIT_INTERRUPTED, TrainingRun
from scaleml_api.v1alpha1.pods import ANNOTATIONS_MAX_BYTES
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import trainingjob as build
from scaleml_operator.builders.meta import Owner
from tests.support.manifests import example, merged

OWNER = Owner("TrainingJob", "churn", "ml", "0b7c-uid")
IMAGE = "registry.example/scaleml/workloads:1"


def _spec(**changes: Any) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(merged(example("TrainingJob"), {"spec": changes})["spec"])


def _by_kind(spec: TrainingJobSpec) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in build.children(OWNER, spec, IMAGE).apply}


def test_a_users_variable_replaces_the_operators_default_of_that_name() -> None:
    spec = _spec(env=[{"name": "HOME", "value": "/scratch/me"}, {"name": "PYTHONUNBUFFERED", "value": "0"}])
    pod = _by_kind(spec)["Job"]["spec"]["template"]["spec"]
    for container in (*pod["initContainers"], *pod["containers"]):
        names = [variable["name"] for variable in container["env"]]
        assert len(names) == len(set(names)), names
        assert {"name": "HOME", "value": "/scratch/me"} in container["env"]
        assert {"name": "PYTHONUNBUFFERED", "value": "0"} in container["env"]
        assert {"name": "TORCHINDUCTOR_CACHE_DIR", "value": "/tmp/inductor"} in container["env"]


def test_variables_from_other_sources_reach_the_containers_as_the_pod_api_spells_them() -> None:
    sources = [
        {"secretKeyRef": {"name": "hf", "key": "token", "optional": True}},
        {"configMapKeyRef": {"name": "settings", "key": "mode"}},
        {"fieldRef": {"fieldPath": "metadata.labels['team.example.com/owner']", "apiVersion": "v1"}},
        {"fieldRef": {"fieldPath": "status.podIP"}},
        {"resourceFieldRef": {"resource": "limits.memory", "containerName": "trainer", "divisor": "1Mi"}},
    ]
    env = [{"name": f"FROM_{i}", "valueFrom": source} for i, source in enumerate(sources)]
    pod = _by_kind(_spec(env=env))["Job"]["spec"]["template"]["spec"]
    for container in (*pod["initContainers"], *pod["containers"]):
        passed = [variable for variable in container["env"] if variable["name"].startswith("FROM_")]
        assert [{"name": v["name"], "valueFrom": v["valueFrom"]} for v in passed] == env


def test_children_are_owned_labelled_and_the_job_comes_last() -> None:
    children = build.children(OWNER, _spec(), IMAGE).apply
    assert [c["kind"] for c in children] == ["ServiceAccount", "RoleBinding", "Service", "ConfigMap", "Job"]
    for child in children:
        (reference,) = child["metadata"]["ownerReferences"]
        assert reference == {
            "apiVersion": "scaleml.dev/v1alpha1",
            "kind": "TrainingJob",
            "name": "churn",
            "uid": "0b7c-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "ml"
        assert child["metadata"]["labels"]["scaleml.dev/trainingjob"] == "churn"


def test_the_workers_service_account_is_bound_to_the_trainers_cluster_role_in_the_namespace() -> None:
    children = _by_kind(_spec())
    assert children["Job"]["spec"]["template"]["spec"]["serviceAccountName"] == "churn-trainer"
    binding = children["RoleBinding"]
    assert binding["metadata"]["namespace"] == "ml"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "scaleml-trainer-status",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "churn-trainer", "namespace": "ml"}]


def test_job_runs_torchrun_with_c10d_rendezvous_on_worker_zero() -> None:
    job = _by_kind(_spec())["Job"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "churn-workers"
    command = pod["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "scaleml_workloads.training.launch"], "torchrun, with the pod's exit code"
    assert "--nnodes=1:4" in command  # elastic
    assert "--nproc-per-node=1" in command
    assert "--rdzv-endpoint=churn-0.churn-workers.ml.svc:29400" in command
    assert "--rdzv-id=0b7c-uid" in command
    assert "--max-restarts=3" in command
    assert command[-4:] == ["-m", "scaleml_workloads.training", "--config", "/etc/scaleml/run.json"]


def test_fixed_size_job_does_not_restart_in_place() -> None:
    command = _by_kind(_spec(elastic=None))["Job"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--nnodes=2" in command
    assert "--max-restarts=0" in command


def test_gpu_workers_request_gpus_and_tolerate_gpu_nodes() -> None:
    spec = _spec(resources={"gpusPerWorker": 4, "workers": 2}, scheduling={"tolerations": []})
    pod = _by_kind(spec)["Job"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert "--nproc-per-node=4" in container["command"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "covered"),
    [
        # Same key, another effect: nodes tainted nvidia.com/gpu:NoSchedule still need the operator's.
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "PreferNoSchedule"}, False),
        # One value only: a taint nvidia.com/gpu=other:NoSchedule would still repel the pods.
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}, False),
        ({"key": "example.com/pool", "operator": "Exists"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),
        ({"operator": "Exists", "effect": "NoSchedule"}, True),
        ({"operator": "Exists", "effect": "NoExecute"}, False),
    ],
)
def test_gpu_workers_keep_the_gpu_toleration_unless_the_users_tolerate_that_taint(
    toleration: dict[str, Any], covered: bool
) -> None:
    spec = _spec(resources={"gpusPerWorker": 1}, scheduling={"tolerations": [toleration]})
    tolerations = _by_kind(spec)["Job"]["spec"]["template"]["spec"]["tolerations"]
    assert tolerations[1:] == ([] if covered else [GPU_TOLERATION])
    assert build.covers(tolerations[0], GPU_TOLERATION) is covered


def test_cpu_workers_request_no_gpus() -> None:
    pod = _by_kind(_spec(resources={"gpusPerWorker": 0}, precision="bf16", scheduling={"tolerations": []}))["Job"]
    container = pod["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in pod["spec"]["template"]["spec"]
    # On a GPU node (a toleration of everything, say) a CUDA image would see every GPU and train with NCCL.
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == ("void", "")
    gpu = _by_kind(_spec(resources={"gpusPerWorker": 1}))["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert not {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"} & {e["name"] for e in gpu["env"]}


def test_pods_meet_restricted_pod_security_with_writable_volumes() -> None:
    pod = _by_kind(_spec())["Job"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True
    assert {"/output", "/checkpoints", "/dev/shm", "/tmp"} <= set(mounts)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["checkpoints"]["persistentVolumeClaim"]["claimName"] == "checkpoints"


def _run(spec: TrainingJobSpec) -> TrainingRun:
    """The run config the pods read: the ConfigMap's file that their --config names."""
    objects = _by_kind(spec)
    pod = objects["Job"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    for container in (*pod["initContainers"], *pod["containers"]):
        assert {"name": volume["name"], "mountPath": "/etc/scaleml", "readOnly": True} in container["volumeMounts"]
        # Stored once, in the ConfigMap: a large spec does not grow every container and every pod.
        assert all(e["name"] != "SCALEML_CONFIG" for e in container["env"])
    return TrainingRun.model_validate(json.loads(objects["ConfigMap"]["data"]["run.json"]))


def test_pods_get_the_spec_as_their_run_config() -> None:
    run = _run(_spec())
    assert (run.namespace, run.name) == ("ml", "churn")
    assert run.spec.data.target == "churned"
    assert run.checkpoint_dir == "/checkpoints/churn-0b7c-uid", "one directory per TrainingJob object"
    assert run.spec.run_policy.active_deadline_seconds is None, "the run policy stays with the Job"
    assert _run(_spec(checkpoint=None)).checkpoint_dir is None


def test_input_is_checked_before_torchrun_starts() -> None:
    pod = _by_kind(_spec())["Job"]["spec"]["template"]["spec"]
    (check,) = pod["initContainers"]
    (trainer,) = pod["containers"]
    assert check["command"] == [
        "python",
        "-m",
        "scaleml_workloads.training",
        "--check",
        "--config",
        "/etc/scaleml/run.json",
    ]
    assert (check["env"], check["volumeMounts"], check["image"]) == (trainer["env"], trainer["volumeMounts"], IMAGE)
    assert "nvidia.com/gpu" not in check["resources"]["limits"]
    assert check["securityContext"] == trainer["securityContext"]


def _action(rules: list[dict[str, Any]], exit_codes: dict[str, int], conditions: tuple[str, ...] = ()) -> str:
    """What the Job controller does with a failed pod: the first rule that matches, Count when none does.

    `exit_codes` by container (init containers included), `conditions` the pod's True conditions.
    """
    for rule in rules:
        if "onExitCodes" in rule:
            requirement = rule["onExitCodes"]
            assert requirement["operator"] == "In", "only In is evaluated here"
            named = requirement.get("containerName")
            if any(code in requirement["values"] for name, code in exit_codes.items() if named in (None, name)):
                return str(rule["action"])
        elif any(pattern["status"] == "True" and pattern["type"] in conditions for pattern in rule["onPodConditions"]):
            return str(rule["action"])
    return "Count"


@pytest.mark.parametrize(
    ("exit_codes", "conditions", "action"),
    [
        # The input check failed: no retry can help.
        ({"check": 2}, (), "FailJob"),
        ({"check": 0, "trainer": 2}, (), "FailJob"),
        # A program error (the launcher's 1), or a command that cannot run or is missing.
        ({"check": 0, "trainer": 1}, (), "FailJob"),
        ({"check": 0, "trainer": 126}, (), "FailJob"),
        ({"check": 0, "trainer": 127}, (), "FailJob"),
        # The run was interrupted (a peer or the rendezvous went away): retried, within backoffLimit.
        ({"check": 0, "trainer": EXIT_INTERRUPTED}, (), "Count"),
        # A crash of another kind: the same.
        ({"check": 0, "trainer": 139}, (), "Count"),
        # Killed: by the kernel's OOM killer (137, reason OOMKilled), or by someone deleting the pod.
        # Counted: a worker that runs out of memory must not be retried for ever.
        ({"check": 0, "trainer": 137}, (), "Count"),
        ({"check": 137}, (), "Count"),
        ({"check": 0, "trainer": 143}, (), "Count"),
        # Disrupted (preempted, evicted, drained, its node shut down or lost): retried for free,
        # whatever its program exited with as it was stopped.
        ({"check": 0, "trainer": 143}, ("DisruptionTarget",), "Ignore"),
        ({"check": 0, "trainer": 137}, ("DisruptionTarget",), "Ignore"),
        ({"check": 0, "trainer": EXIT_INTERRUPTED}, ("DisruptionTarget",), "Ignore"),
        ({"check": 0, "trainer": 1}, ("DisruptionTarget",), "Ignore"),
        ({"check": 2}, ("DisruptionTarget",), "Ignore"),
    ],
)
def test_exit_codes_decide_between_failing_now_and_retrying(
    exit_codes: dict[str, int], conditions: tuple[str, ...], action: str
) -> None:
    job = _by_kind(_spec())["Job"]["spec"]
    pod = job["template"]["spec"]
    assert set(exit_codes) <= {c["name"] for c in (*pod["initContainers"], *pod["containers"])}
    assert _action(job["podFailurePolicy"]["rules"], exit_codes, conditions) == action


@pytest.mark.parametrize(
    "changes",
    [
        {"resources": {"workers": 1}, "elastic": None},
        {"resources": {"workers": 5}, "elastic": None},
        {"resources": {"workers": 512}, "elastic": None},
        {"resources": {"workers": 4}, "elastic": {"minWorkers": 2, "maxWorkers": 8}},
    ],
    ids=["one-worker", "five-workers", "512-workers", "elastic"],
)
def test_the_backoff_limit_counts_each_workers_failures_whatever_the_size_of_the_group(
    changes: dict[str, Any],
) -> None:
    job = _by_kind(_spec(runPolicy={"backoffLimit": 3}, **changes))["Job"]["spec"]
    # A restart of the group costs each of its workers one failure (the peers of the worker that went
    # exit 75), so three restarts are allowed however many workers there are; a worker that alone
    # keeps failing (out of memory, say) fails the job on its fourth failure.
    assert job["backoffLimitPerIndex"] == 3
    # One worker out of retries fails the job at once: the group cannot finish without it.
    assert job["maxFailedIndexes"] == 0
    # No Job-wide count that a group of N would spend N-1 of on one preempted worker.
    assert job["backoffLimit"] == 2**31 - 1
    assert job["completionMode"] == "Indexed"


def test_run_policy_and_scheduling_reach_the_job() -> None:
    spec = _spec(
        runPolicy={"backoffLimit": 5, "activeDeadlineSeconds": 600, "ttlSecondsAfterFinished": 30, "suspend": True},
        scheduling={"queueName": "gpu-queue", "priorityClassName": "high", "nodeSelector": {"pool": "a100"}},
    )
    job = _by_kind(spec)["Job"]
    assert job["spec"]["backoffLimitPerIndex"] == 5
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["ttlSecondsAfterFinished"] == 30
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    pod = job["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "high"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "a100"}


def test_pod_annotations_fit_kubernetes_limit_when_the_user_takes_all_they_may() -> None:
    # Kubernetes refuses a pod template whose annotations take more than 256 KiB of UTF-8.
    per_entry = ANNOTATIONS_MAX_BYTES // 60
    annotations = {f"k{i:02d}": "v" * (per_entry - 3) for i in range(60)}
    spec = _spec(podMetadata={"annotations": annotations})
    template = _by_kind(spec)["Job"]["spec"]["template"]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in template["metadata"]["annotations"].items())
    assert sum(len(k) + len(v) for k, v in annotations.items()) == ANNOTATIONS_MAX_BYTES
    assert size <= 256 * 1024
    # What ScaleML adds stays well inside the room left for it and for others' (webhooks, controllers).
    assert size - ANNOTATIONS_MAX_BYTES < 1024


def test_suspending_does_not_change_the_pod_template() -> None:
    running = _by_kind(_spec())["Job"]
    suspended = _by_kind(_spec(runPolicy={"suspend": True}))["Job"]
    assert running["metadata"]["annotations"] == suspended["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("change", "kept"),
    [
        ({"hyperparameters": {"epochs": 99}}, "spec.template"),
        ({"resources": {"workers": 3}}, "spec.completions"),
        # Kubernetes does not let a Job's per-index limit change.
        ({"runPolicy": {"backoffLimit": 7}}, "spec.backoffLimitPerIndex"),
    ],
)
def test_a_started_job_keeps_what_cannot_change_and_says_so(change: dict[str, Any], kept: str) -> None:
    live = _by_kind(_spec())["Job"]
    desired = _by_kind(_spec(**merged(change, {"runPolicy": {"suspend": True}})))["Job"]
    job, problem = build.job_to_apply(desired, live)
    assert job is not None
    assert job["spec"]["template"] == live["spec"]["template"]
    assert job["spec"]["completions"] == live["spec"]["completions"]
    assert job["spec"]["backoffLimitPerIndex"] == live["spec"]["backoffLimitPerIndex"]
    assert job["spec"]["suspend"] is True  # what can change still does
    assert kept in problem


def test_a_job_made_before_per_worker_limits_keeps_its_failure_policy_and_job_wide_limit() -> None:
    desired = _by_kind(_spec(runPolicy={"suspend": True}))["Job"]
    live = json.loads(json.dumps(_by_kind(_spec())["Job"]))
    for name in ("backoffLimitPerIndex", "maxFailedIndexes"):
        del live["spec"][name]
    earlier_policy = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [137, 143]}}]}
    live["spec"].update(backoffLimit=3, podFailurePolicy=earlier_policy)
    job, problem = build.job_to_apply(desired, live)
    assert job is not None
    # The API server refuses a change of podFailurePolicy and backoffLimitPerIndex, and maxFailedIndexes
    # without a per-index limit: the Job goes on as it was made, with its Job-wide limit.
    assert job["spec"]["podFailurePolicy"] == earlier_policy
    assert job["spec"]["backoffLimit"] == 3
    assert "backoffLimitPerIndex" not in job["spec"]
    assert "maxFailedIndexes" not in job["spec"]
    assert job["spec"]["suspend"] is True
    assert "spec.podFailurePolicy" in problem
    assert "spec.backoffLimitPerIndex" in problem


def _job_at(generation: int | None, image: str = IMAGE, **changes: Any) -> dict[str, Any]:
    owner = Owner(OWNER.kind, OWNER.name, OWNER.namespace, OWNER.uid, generation)
    (job,) = [m for m in build.children(owner, _spec(**changes), image).apply if m["kind"] == "Job"]
    return job


def test_a_job_the_operator_now_renders_otherwise_for_the_same_spec_runs_on_with_nothing_to_report() -> None:
    # An upgrade of the operator (or another --workload-image) changes the template of every running
    # Job: the spec was applied, and the running Job finishes as it started.
    live = _job_at(3)
    job, problem = build.job_to_apply(_job_at(3, image="registry.example/scaleml/workloads:2"), live)
    assert problem == ""
    assert job is not None
    assert job["spec"]["template"] == live["spec"]["template"]
    assert job["metadata"]["annotations"] == live["metadata"]["annotations"]
    # A Job of a release that did not record the generation was made from the first spec.
    earlier = json.loads(json.dumps(_job_at(1)))
    del earlier["metadata"]["annotations"][build.SPEC_GENERATION]
    job, problem = build.job_to_apply(_job_at(1, image="registry.example/scaleml/workloads:2"), earlier)
    assert problem == ""
    assert job is not None
    assert build.SPEC_GENERATION not in job["metadata"]["annotations"]


def test_a_spec_changed_since_the_job_was_made_is_kept_back_and_stays_so_through_an_upgrade() -> None:
    live = _job_at(1)
    changed = _job_at(2, hyperparameters={"epochs": 99})
    job, problem = build.job_to_apply(changed, live)
    assert "spec.template" in problem
    assert job is not None
    # The kept Job says which spec it was made from, so that the next run (the same generation) says so too.
    assert job["metadata"]["annotations"][build.SPEC_GENERATION] == "1"
    upgraded = _job_at(2, image="registry.example/scaleml/workloads:2", hyperparameters={"epochs": 99})
    assert "spec.template" in build.job_to_apply(upgraded, job)[1]
    earlier = json.loads(json.dumps(live))
    del earlier["metadata"]["annotations"][build.SPEC_GENERATION]
    assert "spec.template" in build.job_to_apply(changed, earlier)[1]


def test_the_same_amounts_spelled_otherwise_are_no_change_to_a_running_job() -> None:
    live = _job_at(1, resources={"cpu": "4", "memory": "16Gi"})
    respelled = _job_at(2, resources={"cpu": "4000m", "memory": "16384Mi"})
    job, problem = build.job_to_apply(respelled, live)
    assert problem == ""
    assert job is not None
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert (limits["cpu"], limits["memory"]) == ("4", "16Gi")
    # More memory is a change the running Job cannot take.
    assert "spec.template" in build.job_to_apply(_job_at(2, resources={"memory": "16385Mi"}), live)[1]


def test_an_unchanged_job_is_applied_as_desired_and_a_finished_one_left_alone() -> None:
    desired = _by_kind(_spec())["Job"]
    assert build.job_to_apply(desired, None) == (desired, "")
    assert build.job_to_apply(desired, desired) == (desired, "")
    finished = {**desired, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert build.job_to_apply(desired, finished) == (None, "")
