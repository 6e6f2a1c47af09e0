from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scaleml_api.runtime import EXIT_INTERRUPTED
from scaleml_operator.status.conditions import find_condition, timestamp
from scaleml_operator.status.trainingjob import (
    NOT_CREATED_AFTER,
    events,
    exported_version,
    gpu_hours,
    not_created,
    observed,
    phase_event,
    termination_message,
    workers_missing,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _job(*conditions: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn"},
        "spec": {"parallelism": 2},
        "status": {
            **status,
            "conditions": [
                {"type": c, "status": "True", "reason": f"{c}Reason", "lastTransitionTime": "2026-01-01T11:00:00Z"}
                for c in conditions
            ],
        },
    }


def _pod(
    phase: str, *, gpus: int = 0, start: str = "2026-01-01T10:00:00Z", worker: int = 0, **terminated: Any
) -> dict[str, Any]:
    """Worker `worker`'s pod of Job churn, its trainer container ended as `terminated` says (else running)."""
    state = {"terminated": {"finishedAt": "2026-01-01T11:00:00Z", **terminated}} if terminated else {"running": {}}
    limits = {"nvidia.com/gpu": gpus, "memory": "16Gi"}
    return {
        "metadata": {
            "name": f"churn-{worker}-x",
            "annotations": {"batch.kubernetes.io/job-completion-index": str(worker)},
        },
        "spec": {"containers": [{"name": "trainer", "resources": {"limits": limits}}]},
        "status": {"phase": phase, "startTime": start, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


def _status(patch: dict[str, Any], type_: str) -> str:
    condition = find_condition(patch["conditions"], type_)
    assert condition is not None
    return str(condition["status"])


def test_without_a_job_the_training_job_is_pending() -> None:
    patch = observed({}, job=None, pods=[], generation=1, now=NOW)
    assert patch["phase"] == "Pending"
    assert _status(patch, "Created") == "False"


def test_active_workers_mean_running() -> None:
    patch = observed({}, job=_job(active=2, ready=2, startTime="2026-01-01T10:00:00Z"), pods=[], generation=1, now=NOW)
    assert patch["phase"] == "Running"
    assert _status(patch, "Running") == "True"
    assert _status(patch, "Restarting") == "False"
    assert patch["startTime"] == "2026-01-01T10:00:00Z"
    assert "completionTime" not in patch


def test_a_failed_pod_while_not_all_ready_is_a_restart() -> None:
    pods = [_pod("Failed", exitCode=137, reason="OOMKilled"), _pod("Running"), _pod("Pending")]
    patch = observed({}, job=_job(active=2, ready=1), pods=pods, generation=1, now=NOW)
    assert patch["restarts"] == 1
    assert _status(patch, "Restarting") == "True"
    restarting = find_condition(patch["conditions"], "Restarting")
    assert restarting is not None
    assert "137" in restarting["message"]


def test_complete_job_means_succeeded_with_completion_time() -> None:
    job = _job("Complete", succeeded=2, completionTime="2026-01-01T11:30:00Z")
    patch = observed({}, job=job, pods=[], generation=1, now=NOW)
    assert patch["phase"] == "Succeeded"
    assert _status(patch, "Succeeded") == "True"
    assert _status(patch, "Failed") == "False"
    assert patch["completionTime"] == "2026-01-01T11:30:00Z"


def test_failed_job_carries_the_workers_last_words() -> None:
    pods = [_pod("Failed", exitCode=2, message="column 'age' is missing from churn/train.parquet")]
    patch = observed({}, job=_job("Failed", failed=1), pods=pods, generation=3, now=NOW)
    assert patch["phase"] == "Failed"
    failed = find_condition(patch["conditions"], "Failed")
    assert failed is not None
    assert failed["reason"] == "FailedReason"
    assert (
        failed["message"] == "worker 0 (pod churn-0-x): exit code 2: column 'age' is missing from churn/train.parquet"
    )
    assert failed["observedGeneration"] == 3
    assert patch["completionTime"] == "2026-01-01T11:00:00Z"


def test_suspended_job_means_suspended() -> None:
    patch = observed({}, job=_job("Suspended"), pods=[], generation=1, now=NOW)
    assert patch["phase"] == "Suspended"
    assert _status(patch, "Suspended") == "True"


def test_gpu_hours_count_gpus_times_time_held() -> None:
    pods = [
        _pod("Succeeded", gpus=2, exitCode=0),
        _pod("Running", gpus=4, start="2026-01-01T11:30:00Z"),
        _pod("Running"),
    ]
    # 2 GPUs for 1 h, finished; 4 GPUs for 0.5 h, still running.
    assert gpu_hours(pods, NOW) == 4.0


def test_termination_message_falls_back_to_the_exit_code() -> None:
    assert (
        termination_message([_pod("Failed", exitCode=139, reason="Error")])
        == "worker 0 (pod churn-0-x): exit code 139 (Error)"
    )
    assert termination_message([_pod("Running")]) == ""


def test_a_worker_killed_out_of_memory_is_named_with_its_memory_limit() -> None:
    said = termination_message([_pod("Failed", worker=3, exitCode=137, reason="OOMKilled")])
    assert said == (
        "worker 3 (pod churn-3-x): container trainer was OOMKilled (exit code 137): "
        "out of memory at its memory limit of 16Gi (resources.memory)"
    )


def test_termination_message_is_the_failed_check_s_when_the_pod_ended_before_its_trainer() -> None:
    check = {"name": "check", "state": {"terminated": {"exitCode": 2, "message": "no column 'cancelled'\n"}}}
    waiting = {"name": "trainer", "state": {"waiting": {"reason": "PodInitializing"}}}
    pod = {
        "metadata": {"name": "churn-0-x"},
        "status": {"phase": "Failed", "initContainerStatuses": [check], "containerStatuses": [waiting]},
    }
    assert termination_message([pod]) == "pod churn-0-x: exit code 2: no column 'cancelled'"
    # A check that passed says nothing: the trainer's failure is the story.
    passed = {"name": "check", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    trainer = _pod("Failed", exitCode=137, reason="OOMKilled")
    trainer["status"]["initContainerStatuses"] = [passed]
    assert "container trainer was OOMKilled" in termination_message([trainer])


def _ended(pod: dict[str, Any], at: str) -> dict[str, Any]:
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"] = at
    return pod


def test_the_failure_that_restarted_the_group_is_told_not_the_peers_it_interrupted() -> None:
    # Worker 1 ran out of memory; its peers lost their group a moment later and exited 75.
    oom = _ended(_pod("Failed", worker=1, exitCode=137, reason="OOMKilled"), "2026-01-01T11:00:00Z")
    peers = [
        _ended(
            _pod("Failed", worker=worker, exitCode=EXIT_INTERRUPTED, message="lost their group"), "2026-01-01T11:00:05Z"
        )
        for worker in (0, 2)
    ]
    assert termination_message([*peers, oom]).startswith("worker 1 (pod churn-1-x): container trainer was OOMKilled")
    # A preempted worker is the cause the same way, told as the disruption it was.
    preempted = _ended(_pod("Failed", worker=1, exitCode=143, reason="Error"), "2026-01-01T11:00:00Z")
    preempted["status"]["conditions"] = [
        {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": "Preempted."}
    ]
    said = termination_message([*peers, preempted])
    assert said == "worker 1 (pod churn-1-x) was disrupted: PreemptionByScheduler: Preempted."


def test_a_cause_from_an_earlier_restart_does_not_speak_for_a_later_one() -> None:
    # Worker 1 ran out of memory once; later the whole group lost its store (every worker interrupted).
    early = _ended(_pod("Failed", worker=1, exitCode=137, reason="OOMKilled"), "2026-01-01T10:00:00Z")
    later = [
        _ended(
            _pod("Failed", worker=worker, exitCode=EXIT_INTERRUPTED, message=f"lost ({worker})"),
            f"2026-01-01T11:00:0{worker}Z",
        )
        for worker in (0, 1)
    ]
    assert termination_message([early, *later]) == f"worker 1 (pod churn-1-x): exit code {EXIT_INTERRUPTED}: lost (1)"


def test_a_worker_out_of_retries_fails_the_training_job_as_its_backoff_limit_exceeded() -> None:
    job = _job("Failed")
    job["status"]["conditions"][0]["reason"] = "MaxFailedIndexesExceeded"
    pods = [_pod("Failed", worker=1, exitCode=137, reason="OOMKilled")]
    failed = _condition(observed({}, job=job, pods=pods, generation=1, now=NOW), "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "worker 1 (pod churn-1-x): container trainer was OOMKilled" in failed["message"]


def test_model_version_comes_from_the_workers_last_words_when_the_patch_was_lost() -> None:
    pods = [_pod("Succeeded", exitCode=0, message='{"modelVersion": 4}'), _pod("Succeeded", exitCode=0)]
    patch = observed({}, job=_job("Complete"), pods=pods, generation=1, now=NOW)
    assert patch["modelVersion"] == 4
    reported = observed({"modelVersion": 5}, job=_job("Complete"), pods=pods, generation=1, now=NOW)
    assert "modelVersion" not in reported


def test_a_termination_message_that_is_not_json_gives_no_version_and_no_error() -> None:
    # The worker's code writes it: up to 4096 bytes of anything, as deeply nested as that allows.
    for message in ('{"modelVersion": 3', '{"a":' + "[" * 4000):
        assert exported_version([_pod("Succeeded", exitCode=0, message=message)]) is None
    assert exported_version([_pod("Succeeded", exitCode=0, message='{"modelVersion": 3}')]) == 3


def test_phase_changes_come_with_events() -> None:
    failed = observed(
        {}, job=_job("Failed"), pods=[_pod("Failed", exitCode=2, message="no column 'age'")], generation=1, now=NOW
    )
    event = phase_event("Failed", failed)
    assert event is not None
    assert (event.type, event.reason) == ("Warning", "TrainingFailed")
    assert "no column 'age'" in event.message
    succeeded = phase_event("Succeeded", {"modelVersion": 3})
    assert succeeded is not None
    assert succeeded.reason == "TrainingSucceeded"
    assert "version 3" in succeeded.message
    started = phase_event("Running", observed({}, job=_job(active=2, ready=2), pods=[], generation=1, now=NOW))
    assert started is not None
    assert (started.reason, started.message) == ("TrainingStarted", "2/2 workers running.")
    assert phase_event("Pending", {}) is None


def test_a_run_seen_only_when_it_succeeded_still_says_it_started() -> None:
    succeeded = observed({}, job=_job("Complete"), pods=[], generation=1, now=NOW)
    unseen = [event.reason for event in events({"phase": "Pending"}, succeeded)]
    assert unseen == ["TrainingStarted", "TrainingSucceeded"]
    seen = [event.reason for event in events({"phase": "Running"}, succeeded)]
    assert seen == ["TrainingSucceeded"]
    assert events(succeeded, succeeded) == []


UNSCHEDULABLE = "0/5 nodes are available: 5 node(s) didn't match Pod's node affinity/selector."


def _waiting_pod(name: str, *, scheduled: str | None = None, waiting: str | None = None, **said: str) -> dict[str, Any]:
    """A worker pod that has not started: the scheduler's reason on PodScheduled, or its trainer's waiting reason."""
    status: dict[str, Any] = {"phase": "Pending"}
    if scheduled:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": scheduled, "message": said.get("message", "")}
        ]
    if waiting:
        status["containerStatuses"] = [{"name": "trainer", "state": {"waiting": {"reason": waiting, **said}}}]
    return {"metadata": {"name": name}, "spec": {"containers": []}, "status": status}


def _running_pod(name: str) -> dict[str, Any]:
    pod = _pod("Running")
    pod["metadata"] = {"name": name}
    return pod


def _condition(patch: dict[str, Any], type_: str) -> dict[str, Any]:
    condition = find_condition(patch["conditions"], type_)
    assert condition is not None
    return dict(condition)


def test_unschedulable_workers_are_pending_with_the_scheduler_s_words_and_no_started_event() -> None:
    # The Job counts pods still waiting for a node as active.
    pods = [_waiting_pod(f"churn-{i}-x", scheduled="Unschedulable", message=UNSCHEDULABLE) for i in (1, 0)]
    patch = observed({}, job=_job(active=2, ready=0), pods=pods, generation=1, now=NOW)
    assert patch["phase"] == "Pending"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("False", "Unschedulable")
    assert running["message"] == f"0/2 workers running. Pod churn-0-x: Unschedulable: {UNSCHEDULABLE}"
    assert events({"phase": "Pending"}, patch) == []


def test_an_image_that_cannot_be_pulled_is_pending_with_the_kubelet_s_reason() -> None:
    said = 'Back-off pulling image "registry.example/scaleml/workloads:typo"'
    pods = [_waiting_pod("churn-0-x", waiting="ImagePullBackOff", message=said), _waiting_pod("churn-1-x")]
    patch = observed({}, job=_job(active=2, ready=0), pods=pods, generation=1, now=NOW)
    assert patch["phase"] == "Pending"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("False", "ImagePullBackOff")
    assert running["message"] == f"0/2 workers running. Pod churn-0-x: container trainer: ImagePullBackOff: {said}"


def test_a_missing_secret_and_a_crash_looping_init_container_say_so() -> None:
    config = _waiting_pod("churn-0-x", waiting="CreateContainerConfigError", message='secret "s3" not found')
    patch = observed({}, job=_job(active=1, ready=0), pods=[config], generation=1, now=NOW)
    assert _condition(patch, "Running")["reason"] == "CreateContainerConfigError"
    assert 'secret "s3" not found' in _condition(patch, "Running")["message"]
    check = _waiting_pod("churn-0-x")
    check["status"]["initContainerStatuses"] = [
        {
            "name": "check",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": ""}},
            "lastState": {"terminated": {"exitCode": 2, "message": "no column 'age'\n"}},
        }
    ]
    patch = observed({}, job=_job(active=1, ready=0), pods=[check], generation=1, now=NOW)
    running = _condition(patch, "Running")
    assert running["reason"] == "CrashLoopBackOff"
    assert running["message"].endswith("init container check: CrashLoopBackOff: exit code 2: no column 'age'")


def test_workers_starting_as_they_should_are_pending_without_a_problem() -> None:
    starting = _waiting_pod("churn-0-x", waiting="ContainerCreating")
    patch = observed({}, job=_job(active=2, ready=0), pods=[starting], generation=1, now=NOW)
    assert patch["phase"] == "Pending"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("False", "WorkersPending")
    assert running["message"] == "0/2 workers running; the others are being scheduled or starting."


def test_an_unknown_kubelet_reason_is_workers_pending_with_the_reason_in_the_message() -> None:
    pod = _waiting_pod("churn-0-x", waiting="SomethingNew", message="the runtime said no")
    running = _condition(observed({}, job=_job(active=1), pods=[pod], generation=1, now=NOW), "Running")
    assert running["reason"] == "WorkersPending"
    assert "SomethingNew: the runtime said no" in running["message"]


def test_running_pods_mean_running_and_training_started_once() -> None:
    # The Job's ready count may lag its pods: the pods say they run.
    pods = [_running_pod("churn-0-x"), _running_pod("churn-1-x")]
    patch = observed({}, job=_job(active=2, ready=0), pods=pods, generation=1, now=NOW)
    assert patch["phase"] == "Running"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"], running["message"]) == (
        "True",
        "WorkersRunning",
        "2/2 workers running.",
    )
    assert [(event.reason, event.message) for event in events({"phase": "Pending"}, patch)] == [
        ("TrainingStarted", "2/2 workers running.")
    ]


def test_a_pod_being_deleted_does_not_run() -> None:
    leaving = _running_pod("churn-0-x")
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    patch = observed({}, job=_job(active=1, ready=0), pods=[leaving], generation=1, now=NOW)
    assert patch["phase"] == "Pending"


def test_one_running_worker_and_one_unschedulable_is_pending_for_a_fixed_size_job() -> None:
    # torchrun's rendezvous waits for every worker: one alone does not train.
    pods = [_running_pod("churn-0-x"), _waiting_pod("churn-1-x", scheduled="Unschedulable", message=UNSCHEDULABLE)]
    patch = observed({}, job=_job(active=2, ready=1), pods=pods, generation=1, now=NOW)
    assert patch["phase"] == "Pending"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("False", "Unschedulable")
    assert running["message"].startswith("1/2 workers running. Pod churn-1-x: Unschedulable: ")


def test_an_elastic_job_runs_with_its_minimum_and_says_what_the_others_wait_for() -> None:
    job = _job(active=3, ready=2)
    job["spec"]["parallelism"] = 3
    pods = [
        _running_pod("churn-0-x"),
        _running_pod("churn-1-x"),
        _waiting_pod("churn-2-x", scheduled="Unschedulable", message=UNSCHEDULABLE),
    ]
    patch = observed({}, job=job, pods=pods, generation=1, now=NOW, min_workers=2)
    assert patch["phase"] == "Running"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("True", "WorkersRunning")
    assert running["message"] == f"2/3 workers running. Pod churn-2-x: Unschedulable: {UNSCHEDULABLE}"
    one = {**job, "status": {"active": 3, "ready": 1}}
    below = observed({}, job=one, pods=pods[:1] + pods[2:], generation=1, now=NOW, min_workers=2)
    below_running = _condition(below, "Running")
    assert below["phase"] == "Pending"
    assert below_running["message"].startswith("1/3 workers running (training needs 2). Pod churn-2-x: ")


def test_a_started_run_stays_running_while_a_worker_is_replaced_and_says_why_it_waits() -> None:
    pods = [
        _pod("Failed", exitCode=137, reason="OOMKilled"),
        _running_pod("churn-0-x"),
        _waiting_pod("churn-1-y", scheduled="Unschedulable", message=UNSCHEDULABLE),
    ]
    patch = observed({"phase": "Running"}, job=_job(active=2, ready=1), pods=pods, generation=1, now=NOW)
    assert patch["phase"] == "Running"
    assert _status(patch, "Restarting") == "True"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("False", "Unschedulable")
    assert events({"phase": "Running"}, patch) == []


def test_a_long_message_is_one_line_and_cut() -> None:
    said = "line one\n" + "x" * 5000
    pod = _waiting_pod("churn-0-x", waiting="ErrImagePull", message=said)
    message = _condition(observed({}, job=_job(active=1), pods=[pod], generation=1, now=NOW), "Running")["message"]
    assert "\n" not in message
    assert len(message) < 600
    assert message.endswith("…")


QUOTA = (
    'pods "churn-0-x" is forbidden: exceeded quota: compute, requested: requests.cpu=4, used: requests.cpu=0, '
    "limited: requests.cpu=2"
)


def _failed_create(message: str, at: str) -> dict[str, Any]:
    """A FailedCreate Event of the Job controller's, as the API server lists it."""
    return {"reason": "FailedCreate", "type": "Warning", "message": message, "lastTimestamp": at, "count": 3}


def _made(seconds_ago: float, **status: Any) -> dict[str, Any]:
    """A Job the Job controller started `seconds_ago` (made at least a minute before that)."""
    job = _job(startTime=timestamp(NOW - timedelta(seconds=seconds_ago)), **status)
    job["metadata"]["creationTimestamp"] = timestamp(NOW - timedelta(seconds=seconds_ago + 60))
    return job


def test_a_job_lacking_pods_for_more_than_a_moment_is_asked_why() -> None:
    assert workers_missing(_made(60, active=0), [], NOW)
    assert workers_missing(_made(60, active=1), [], NOW)  # one of two created
    # Just started: its pods are on their way. Not started yet (the Job controller has a backlog): not its turn.
    assert not workers_missing(_made(NOT_CREATED_AFTER.total_seconds() - 1, active=0), [], NOW)
    waiting = _made(60, active=0)
    del waiting["status"]["startTime"]
    assert not workers_missing(waiting, [], NOW)
    # Every pod it runs for exists (the Job's count may lag its pods), or it has nothing left to run.
    assert not workers_missing(_made(60, active=0), [_pod("Pending", worker=0), _pod("Running", worker=1)], NOW)
    assert not workers_missing(_made(60, active=2), [], NOW)
    assert not workers_missing(_made(60, active=0, succeeded=2), [], NOW)
    finished = _made(60, active=0)
    finished["status"]["conditions"] = [{"type": "Failed", "status": "True"}]
    suspended = _made(60, active=0)
    suspended["spec"]["suspend"] = True
    assert not workers_missing(finished, [], NOW)
    assert not workers_missing(suspended, [], NOW)


def test_the_newest_recent_failed_create_says_why_and_an_old_one_says_nothing() -> None:
    older = _failed_create('pods "churn-0-a" is forbidden: an older refusal', "2026-01-01T11:58:00Z")
    newest = _failed_create(QUOTA + "\n", "2026-01-01T11:59:30Z")
    assert not_created([newest, older], NOW) == QUOTA
    stale = _failed_create(QUOTA, timestamp(NOW - timedelta(hours=1)))
    assert not_created([stale], NOW) is None
    assert not_created([], NOW) is None
    # events.k8s.io writers report a repeated Event as a series.
    series = {"reason": "FailedCreate", "message": "by series", "series": {"lastObservedTime": "2026-01-01T11:59:59Z"}}
    assert not_created([newest, series], NOW) == "by series"


def test_workers_the_job_cannot_create_are_pending_with_the_api_servers_words_and_one_warning() -> None:
    patch = observed({}, job=_made(60, active=0), pods=[], generation=1, now=NOW, refused=QUOTA)
    assert patch["phase"] == "Pending"
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("False", "FailedCreate")
    assert running["message"] == f"0/2 workers running. The Job cannot create worker pods: {QUOTA}"
    told = events({"phase": "Pending"}, patch)
    assert [(event.type, event.reason, event.message) for event in told] == [
        ("Warning", "FailedCreate", running["message"])
    ]
    # Not again while it stays so.
    assert events(patch, observed(patch, job=_made(90, active=0), pods=[], generation=1, now=NOW, refused=QUOTA)) == []


def test_a_running_job_that_cannot_replace_a_worker_says_so_while_training_goes_on() -> None:
    job = _made(600, active=1, ready=1)
    job["spec"]["parallelism"] = 3
    patch = observed({}, job=job, pods=[_running_pod("churn-0-x")], generation=1, now=NOW, min_workers=1, refused=QUOTA)
    running = _condition(patch, "Running")
    assert (running["status"], running["reason"]) == ("True", "WorkersRunning")
    assert running["message"] == f"1/3 workers running. The Job cannot create worker pods: {QUOTA}"


def test_restarts_count_the_workers_that_failed_on_their_own_not_the_peers_they_interrupted() -> None:
    # One of five preempted: its four peers lost their group and ended interrupted. One restart.
    preempted = _pod("Failed", worker=1, exitCode=143)
    preempted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True", "reason": "Preemption"}]
    interrupted = [_pod("Failed", worker=i, exitCode=EXIT_INTERRUPTED) for i in (0, 2, 3, 4)]
    replacements = [_pod("Running", worker=i) for i in range(5)]
    job = _job(active=5, ready=5)
    assert observed({}, job=job, pods=[preempted, *interrupted, *replacements], generation=1, now=NOW)["restarts"] == 1
    # Two crashes, one after the other: two restarts; with the preempted pod gone, its peers' still count one.
    crashes = [_pod("Failed", worker=0, exitCode=1), _pod("Failed", worker=0, exitCode=1), *replacements]
    assert observed({}, job=job, pods=crashes, generation=1, now=NOW)["restarts"] == 2
    assert observed({}, job=job, pods=[*interrupted, *replacements], generation=1, now=NOW)["restarts"] == 1


def test_the_failure_that_failed_the_job_is_no_restart() -> None:
    crashes = [_pod("Failed", exitCode=3), _pod("Failed", exitCode=3)]
    failed = _job("Failed", active=0)
    failed["status"]["conditions"][0]["reason"] = "BackoffLimitExceeded"
    assert observed({}, job=failed, pods=crashes, generation=1, now=NOW)["restarts"] == 1
    refused = _job("Failed", active=0)
    refused["status"]["conditions"][0]["reason"] = "PodFailurePolicy"
    assert observed({}, job=refused, pods=crashes[:1], generation=1, now=NOW)["restarts"] == 0
    # A deadline ends the run from outside: every worker failure before it did restart the group.
    late = _job("Failed", active=0)
    late["status"]["conditions"][0]["reason"] = "DeadlineExceeded"
    assert observed({}, job=late, pods=crashes, generation=1, now=NOW)["restarts"] == 2
