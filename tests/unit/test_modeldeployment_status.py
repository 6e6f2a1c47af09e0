"""A ModelDeployment's status from its Deployment and pods: rollouts, readiness, and why a model did not load."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scaleml_api.conditions import Waiting
from scaleml_operator.status.acceptance import applied
from scaleml_operator.status.modeldeployment import events, observed, server_failure

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ENDPOINTS = {"http": "http://churn.ml.svc:8000", "grpc": "churn.ml.svc:8001"}


def _deployment(
    version: int, *, replicas: int = 2, updated: int = 2, ready: int = 2, total: int | None = None, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"generation": 4, "annotations": {"scaleml.dev/model-version": str(version)}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 4,
            "replicas": updated if total is None else total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            **status,
        },
    }


def _observe(
    deployment: dict[str, Any] | None,
    version: int | None = 2,
    pods: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
    waiting: Waiting | None = None,
) -> dict[str, Any]:
    return observed(
        status or {},
        deployment=deployment,
        pods=pods or [],
        waiting=waiting,
        version=version,
        endpoints=ENDPOINTS,
        selector="app=churn",
        generation=7,
        now=NOW,
    )


def _conditions(patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in patch["conditions"]}


def _crashing_pod(message: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn-triton-7d9f-x2"},
        "status": {
            # A pod whose containers were all created is Running while one of them restarts.
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "triton",
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "message": message}},
                }
            ],
        },
    }


def test_a_complete_rollout_is_ready_and_reports_the_served_version() -> None:
    patch = _observe(_deployment(2))
    assert patch["phase"] == "Ready"
    assert patch["servedVersion"] == 2
    assert (patch["replicas"], patch["readyReplicas"]) == (2, 2)
    assert patch["endpoints"] == ENDPOINTS
    conditions = _conditions(patch)
    assert conditions["Ready"]["status"] == "True"
    assert "serving model version 2" in conditions["Ready"]["message"]
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Degraded"]["status"] == "False"
    assert all(c["observedGeneration"] == 7 for c in conditions.values())


def test_during_a_rollout_the_old_version_stays_the_served_one() -> None:
    # Two pods of the old template still serve while one new pod starts.
    patch = _observe(_deployment(3, updated=1, ready=2, total=3), version=3, status={"servedVersion": 2})
    assert patch["phase"] == "Progressing"
    assert "servedVersion" not in patch
    assert _conditions(patch)["Progressing"]["status"] == "True"
    assert _conditions(patch)["Ready"]["status"] == "True"

    # The operator applied version 4 but the Deployment does not show it yet.
    stale = _observe(_deployment(3), version=4)
    assert stale["phase"] == "Progressing"
    assert _conditions(stale)["Progressing"]["message"] == "Rolling out model version 4."


def test_a_model_that_does_not_load_fails_the_deployment_with_tritons_reason() -> None:
    message = "E model_lifecycle.cc:642] failed to load 'churn' version 1: Invalid argument: unexpected shape"
    patch = _observe(_deployment(1, updated=1, ready=0, replicas=1), version=1, pods=[_crashing_pod(message)])

    assert patch["phase"] == "Failed"
    degraded = _conditions(patch)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelLoadFailed")
    assert "unexpected shape" in degraded["message"]
    assert _conditions(patch)["Ready"]["reason"] == "ModelLoadFailed"


def test_a_crash_with_replicas_still_ready_is_degraded() -> None:
    pods = [_crashing_pod("Segmentation fault")]
    patch = _observe(_deployment(1, replicas=2, updated=2, ready=1), version=1, pods=pods)
    assert patch["phase"] == "Degraded"
    assert _conditions(patch)["Degraded"]["reason"] == "ServerCrashing"


def test_a_healthy_or_first_start_pod_is_no_failure() -> None:
    starting = {
        "metadata": {"name": "p"},
        "status": {"containerStatuses": [{"name": "triton", "restartCount": 0, "state": {"running": {}}}]},
    }
    assert server_failure([starting]) is None


def test_a_stalled_rollout_is_degraded() -> None:
    stalled = _deployment(
        2,
        updated=1,
        ready=1,
        total=2,
        conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "x"}],
    )
    patch = _observe(stalled)
    assert patch["phase"] == "Degraded"
    assert _conditions(patch)["Degraded"]["reason"] == "ProgressDeadlineExceeded"


def test_waiting_and_scaled_to_zero_are_not_ready() -> None:
    waiting = _observe(
        None, waiting=Waiting("WaitingForModel", "TrainingJob churn has not exported a model version yet.")
    )
    assert waiting["phase"] == "Pending"
    assert _conditions(waiting)["Ready"]["reason"] == "WaitingForModel"
    assert waiting["replicas"] == 0

    zero = _observe(_deployment(2, replicas=0, updated=0, ready=0))
    assert zero["phase"] == "Pending"
    assert _conditions(zero)["Ready"]["reason"] == "ScaledToZero"


def test_events_announce_a_new_served_version_once_and_failures_as_warnings() -> None:
    ready = _observe(_deployment(2))
    posted = events({"phase": "Progressing", "servedVersion": 1}, ready)
    assert [(e.type, e.reason) for e in posted] == [
        ("Normal", "ModelVersionServed"),
        ("Normal", "ModelDeploymentReady"),
    ]
    assert events(ready, ready) == []

    failed = _observe(_deployment(1, updated=1, ready=0, replicas=1), version=1, pods=[_crashing_pod("failed to load")])
    assert [(e.type, e.reason) for e in events(ready, failed)] == [("Warning", "ModelLoadFailed")]


def test_a_refused_child_is_announced_once_per_reason() -> None:
    ready = _observe(_deployment(2))
    refused = {
        **ready,
        "conditions": [
            *ready["conditions"],
            {"type": "SpecApplied", "status": "False", "reason": "ChildRejected", "message": "HPA churn: invalid"},
        ],
    }
    assert [(e.type, e.reason, e.message) for e in events(ready, refused)] == [
        ("Warning", "SpecNotApplied", "HPA churn: invalid")
    ]
    assert events(refused, refused) == []


# The scheduler's and the kubelet's words, as they write them in a pod's status.
UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."


def _pod(name: str, template: str, created: str, **status: Any) -> dict[str, Any]:
    """A pod of the Triton Deployment's template `template` (its hash), created at `created`."""
    return {
        "metadata": {"name": name, "labels": {"pod-template-hash": template}, "creationTimestamp": created},
        "status": {"phase": "Pending", **status},
    }


def _unschedulable(name: str, template: str = "new", created: str = "2026-11-23T11:59:00Z") -> dict[str, Any]:
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": UNSCHEDULABLE}
    return _pod(name, template, created, conditions=[scheduled])


def _waiting(container: str, reason: str, message: str = "", **state: Any) -> dict[str, Any]:
    return {"name": container, "state": {"waiting": {"reason": reason, "message": message}}, **state}


def _serving(name: str, template: str = "old", created: str = "2026-11-20T08:00:00Z") -> dict[str, Any]:
    return _pod(name, template, created, phase="Running", containerStatuses=[{"name": "triton", "ready": True}])


def test_a_pod_that_cannot_be_scheduled_says_why_before_any_deadline() -> None:
    # A first rollout: its one pod waits for a node with a GPU, and the Deployment's deadline is far.
    deployment = _deployment(1, replicas=1, updated=1, ready=0)
    patch = _observe(deployment, version=1, pods=[_unschedulable("churn-triton-new-x1")])

    assert patch["phase"] == "Progressing"
    conditions = _conditions(patch)
    ready, progressing = conditions["Ready"], conditions["Progressing"]
    assert (ready["status"], ready["reason"]) == ("False", "Unschedulable")
    assert ready["message"] == (
        f"0 of 1 updated replicas are available. Pod churn-triton-new-x1: Unschedulable: {UNSCHEDULABLE}"
    )
    assert (progressing["status"], progressing["reason"], progressing["message"]) == (
        "True",
        "Unschedulable",
        ready["message"],
    )
    # Not a failure yet: a GPU node pool that scales up from zero schedules the pod in a while.
    assert conditions["Degraded"]["status"] == "False"

    before = _observe(deployment, version=1)
    assert _conditions(before)["Progressing"]["reason"] == "RolloutInProgress"
    assert [(e.type, e.reason, e.message) for e in events(before, patch)] == [
        ("Warning", "Unschedulable", progressing["message"])
    ]
    assert (
        events(patch, _observe(deployment, version=1, pods=[_unschedulable("churn-triton-new-x1")], status=patch)) == []
    )


def test_each_reason_a_pod_cannot_start_for_is_passed_on_with_the_kubelets_words() -> None:
    deployment = _deployment(1, replicas=1, updated=1, ready=0)
    crashed = {"terminated": {"exitCode": 1, "message": "no model repository in /models/churn"}}
    cases = {
        "ImagePullBackOff": [_waiting("triton", "ImagePullBackOff", 'Back-off pulling image "tritonserver:nope"')],
        "CreateContainerConfigError": [_waiting("triton", "CreateContainerConfigError", 'secret "hf-token" not found')],
    }
    for reason, statuses in cases.items():
        pod = _pod("churn-triton-new-x1", "new", "2026-11-23T11:59:00Z", containerStatuses=statuses)
        ready = _conditions(_observe(deployment, version=1, pods=[pod]))["Ready"]
        assert ready["reason"] == reason
        assert f"Pod churn-triton-new-x1: container triton: {reason}: " in ready["message"]
        assert statuses[0]["state"]["waiting"]["message"] in ready["message"]

    # The model agent, a native sidecar, crash-loops: Triton never starts.
    agent = _waiting("model-agent", "CrashLoopBackOff", restartCount=4, lastState=crashed)
    pod = _pod("churn-triton-new-x1", "new", "2026-11-23T11:59:00Z", initContainerStatuses=[agent])
    ready = _conditions(_observe(deployment, version=1, pods=[pod]))["Ready"]
    assert ready["reason"] == "CrashLoopBackOff"
    assert "init container model-agent: CrashLoopBackOff: exit code 1: no model repository" in ready["message"]


def test_a_rollout_whose_new_pods_cannot_start_keeps_serving_the_previous_version() -> None:
    # Two pods of the previous template serve version 1; the new template's first pod finds no node.
    deployment = _deployment(1, replicas=2, updated=1, ready=2, total=3)
    pods = [_serving("churn-triton-old-a"), _serving("churn-triton-old-b"), _unschedulable("churn-triton-new-x1")]
    patch = _observe(deployment, version=1, pods=pods, status={"servedVersion": 1})

    assert patch["phase"] == "Progressing"
    conditions = _conditions(patch)
    ready, progressing = conditions["Ready"], conditions["Progressing"]
    cannot_start = (
        "The previous template's pods still serve model version 1; the newest template's cannot start. "
        f"Pod churn-triton-new-x1: Unschedulable: {UNSCHEDULABLE}"
    )
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "True",
        "ReplicasReady",
        f"2/2 replicas ready. {cannot_start}",
    )
    assert (progressing["status"], progressing["reason"]) == ("True", "Unschedulable")
    assert progressing["message"] == f"1 of 2 replicas run the newest template. {cannot_start}"
    assert conditions["Degraded"]["status"] == "False"


def test_only_the_newest_templates_pods_say_why_the_rollout_waits() -> None:
    # A rollout that could not start (the "broken" template) was corrected: its pod still waits for a
    # node while the corrected template's pod starts as it should.
    deployment = _deployment(1, replicas=1, updated=1, ready=1, total=3)
    starting = _pod(
        "churn-triton-fixed-x",
        "fixed",
        "2026-11-23T11:59:30Z",
        containerStatuses=[_waiting("triton", "ContainerCreating")],
    )
    pods = [_serving("churn-triton-old-a"), _unschedulable("churn-triton-broken-x", "broken"), starting]
    progressing = _conditions(_observe(deployment, version=1, pods=pods))["Progressing"]
    assert progressing["reason"] == "RolloutInProgress"
    assert "churn-triton-broken-x" not in progressing["message"]

    # A pod of the old template that lost its node and waits for another one is no news of the rollout,
    # nor is a pod being deleted.
    replaced = _unschedulable("churn-triton-old-b", "old", "2026-11-23T11:59:50Z")
    going = _unschedulable("churn-triton-fixed-y", "fixed", "2026-11-23T11:59:40Z")
    going["metadata"]["deletionTimestamp"] = "2026-11-23T11:59:55Z"
    progressing = _conditions(_observe(deployment, version=1, pods=[*pods, replaced, going]))["Progressing"]
    assert progressing["reason"] == "RolloutInProgress"


def test_past_the_deadline_the_failure_still_names_the_pod_and_why() -> None:
    stalled = _deployment(
        1,
        replicas=1,
        updated=1,
        ready=0,
        conditions=[
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "churn-triton-new" has timed out progressing.',
            }
        ],
    )
    patch = _observe(stalled, version=1, pods=[_unschedulable("churn-triton-new-x1")])
    assert patch["phase"] == "Failed"
    degraded = _conditions(patch)["Degraded"]
    assert (degraded["reason"], degraded["message"]) == (
        "ProgressDeadlineExceeded",
        f'ReplicaSet "churn-triton-new" has timed out progressing. Pod churn-triton-new-x1: Unschedulable: '
        f"{UNSCHEDULABLE}",
    )
    assert _conditions(patch)["Ready"]["message"] == degraded["message"]


def test_a_reason_outside_the_vocabulary_keeps_the_rollouts_reason_and_gives_the_words() -> None:
    pod = _pod(
        "churn-triton-new-x1",
        "new",
        "2026-11-23T11:59:00Z",
        containerStatuses=[_waiting("triton", "ErrImageNeverPull", "image is not present with pull policy Never")],
    )
    conditions = _conditions(_observe(_deployment(1, replicas=1, updated=1, ready=0), version=1, pods=[pod]))
    assert conditions["Ready"]["reason"] == "NoReadyReplica"
    assert conditions["Progressing"]["reason"] == "RolloutInProgress"
    assert "ErrImageNeverPull: image is not present" in conditions["Ready"]["message"]


def test_the_kubelets_alternating_pull_reasons_post_one_event() -> None:
    deployment = _deployment(1, replicas=1, updated=1, ready=0)

    def pulling(reason: str) -> dict[str, Any]:
        statuses = [_waiting("triton", reason, "pull access denied for tritonserver:nope")]
        return _pod("churn-triton-new-x1", "new", "2026-11-23T11:59:00Z", containerStatuses=statuses)

    starting = _observe(deployment, version=1)
    failed = _observe(deployment, version=1, pods=[pulling("ErrImagePull")], status=starting)
    backing_off = _observe(deployment, version=1, pods=[pulling("ImagePullBackOff")], status=failed)
    assert _conditions(backing_off)["Progressing"]["reason"] == "ImagePullBackOff"
    assert [e.reason for e in events(starting, failed)] == ["ErrImagePull"]
    assert events(failed, backing_off) == []


def test_a_refused_autoscaler_leaves_the_replicas_serving_but_not_ready() -> None:
    # What the reconcile records when the API server refuses the HPA: the other children applied.
    refusal = 'HorizontalPodAutoscaler churn: HorizontalPodAutoscaler.autoscaling "churn" is invalid: spec.metrics[1]'
    refused = {
        "conditions": applied({}, foreign=[], rejected=[refusal], denied=False, kept_back="", generation=7, now=NOW)
    }
    ready = _observe(_deployment(2))

    # The Deployment, without its autoscaler, runs the one replica it defaults to.
    patch = _observe(_deployment(2, replicas=1, updated=1, ready=1), status=refused)
    assert patch["phase"] == "Degraded"
    conditions = _conditions(patch)
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "SpecNotApplied")
    assert conditions["Ready"]["message"].startswith("1/1 replicas ready serving model version 2, but a child")
    assert refusal in conditions["Ready"]["message"]
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["message"]) == ("True", refusal)
    # One Warning says it: the SpecApplied condition's, not a second one for the phase.
    assert [(e.type, e.reason) for e in events(ready, patch)] == [("Warning", "SpecNotApplied")]

    # Refreshes (the Deployment's status moving) keep it so until a full run applies every child.
    assert _conditions(_observe(_deployment(2, replicas=1, updated=1, ready=1), status=patch))["Ready"]["status"] == (
        "False"
    )
    fixed = {"conditions": applied(patch, foreign=[], rejected=[], denied=False, kept_back="", generation=8, now=NOW)}
    corrected = _observe(_deployment(2), status=fixed)
    assert (corrected["phase"], _conditions(corrected)["Ready"]["status"]) == ("Ready", "True")
    assert _conditions(corrected)["Degraded"]["status"] == "False"
    assert [(e.type, e.reason) for e in events(patch, corrected)] == [("Normal", "ModelDeploymentReady")]
