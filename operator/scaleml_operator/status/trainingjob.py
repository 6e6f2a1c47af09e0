"""A TrainingJob's status, derived from its batch Job and that Job's pods (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple

from scaleml_api.conditions import CREATING
from scaleml_api.runtime import EXIT_INTERRUPTED
from scaleml_api.v1alpha1.pods import GPU_RESOURCE
from scaleml_api.v1alpha1.trainingjob import (
    BACKOFF_LIMIT_EXCEEDED,
    COMPLETED,
    CREATED,
    FAILED,
    FINISHED_PHASES,
    JOB_CREATED,
    JOB_FAILED,
    JOB_SUSPENDED,
    NO_FAILURE,
    NOT_FINISHED,
    NOT_RESTARTING,
    NOT_SUSPENDED,
    POD_START_PROBLEMS,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    TRAINING_FAILED,
    TRAINING_STARTED,
    TRAINING_SUCCEEDED,
    TRAINING_SUSPENDED,
    WORKER_FAILED,
    WORKERS_NOT_CREATED,
    WORKERS_NOT_CREATED_EVENT,
    WORKERS_PENDING,
    WORKERS_RUNNING,
)
from scaleml_operator.status import pods as worker_pods
from scaleml_operator.status.acceptance import applied_events
from scaleml_operator.status.conditions import Conditions, Event, find_condition, timestamp


def events(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Event]:
    """The Events to post when a TrainingJob's status moves from `previous` to `status`."""
    posted = applied_events(previous, status)
    running = find_condition(status.get("conditions") or (), RUNNING) or {}
    running_before = find_condition(previous.get("conditions") or (), RUNNING) or {}
    if running.get("reason") == WORKERS_NOT_CREATED and running_before.get("reason") != WORKERS_NOT_CREATED:
        posted.append(Event("Warning", WORKERS_NOT_CREATED_EVENT, running.get("message", "")))
    phase, before = status.get("phase"), previous.get("phase")
    if not phase or phase == before:
        return posted
    # Workers that ran and finished between two observations (a short run, a busy operator) did
    # start: the Event history tells the whole story whichever transitions the operator saw.
    if phase == "Succeeded" and before != "Running":
        posted.append(Event("Normal", TRAINING_STARTED, "The workers started and finished between two observations."))
    if (event := phase_event(phase, status)) is not None:
        posted.append(event)
    return posted


def phase_event(phase: str, status: Mapping[str, Any]) -> Event | None:
    """The Event to post when a TrainingJob enters `phase`."""
    conditions = {c["type"]: c for c in status.get("conditions", ())}
    if phase == "Running":
        return Event("Normal", TRAINING_STARTED, conditions.get(RUNNING, {}).get("message", "The workers run."))
    if phase == "Succeeded":
        version = status.get("modelVersion")
        exported = f" Exported model version {version}." if version else ""
        return Event("Normal", TRAINING_SUCCEEDED, f"Every worker finished.{exported}")
    if phase == "Failed":
        failed = conditions.get(FAILED, {})
        return Event("Warning", TRAINING_FAILED, f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}")
    if phase == "Suspended":
        return Event("Normal", TRAINING_SUSPENDED, "The Job is suspended (runPolicy.suspend, or a queue).")
    return None


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _job_condition(job: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in job.get("status", {}).get("conditions") or ():
        if condition.get("type") == type_ and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _pod_end(pod: Mapping[str, Any]) -> datetime | None:
    ends = [
        _parse(status.get("state", {}).get("terminated", {}).get("finishedAt"))
        for status in pod.get("status", {}).get("containerStatuses") or ()
    ]
    return max((end for end in ends if end), default=None)


def gpu_hours(pods: Iterable[Mapping[str, Any]], now: datetime) -> float:
    """GPU time the pods held: GPUs requested times the time from start to end (or now)."""
    total = 0.0
    for pod in pods:
        gpus = sum(
            int(container.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0))
            for container in pod.get("spec", {}).get("containers", ())
        )
        start = _parse(pod.get("status", {}).get("startTime"))
        if not gpus or start is None:
            continue
        end = _pod_end(pod) or now
        total += gpus * max(0.0, (end - start).total_seconds()) / 3600
    return round(total, 4)


# Which worker a pod of the Indexed Job is: the Job controller's annotation, its index.
COMPLETION_INDEX: Final = "batch.kubernetes.io/job-completion-index"
# The Job controller's reason when a worker (an index) failed more than its backoffLimitPerIndex.
MAX_FAILED_INDEXES_EXCEEDED: Final = "MaxFailedIndexesExceeded"
_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)


def _worker(pod: Mapping[str, Any]) -> str | None:
    """The worker (completion index) a pod of the Job runs, as the Job controller annotated it."""
    index = (pod.get("metadata", {}).get("annotations") or {}).get(COMPLETION_INDEX)
    return str(index) if index is not None else None


def _exit(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    """The terminated state of the pod's first container that failed (its init containers first), or {}."""
    status = pod.get("status", {})
    # The data check runs as an init container: a missing column ends the pod there, before the trainer.
    for container in (*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())):
        terminated = container.get("state", {}).get("terminated") or {}
        if terminated and terminated.get("exitCode") != 0:
            return {"container": container.get("name", "?"), **terminated}
    return {}


def _disruption(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod's DisruptionTarget condition, if whatever stopped it from outside set it."""
    for condition in pod.get("status", {}).get("conditions") or ():
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _memory_limit(pod: Mapping[str, Any], container: str) -> str:
    spec = pod.get("spec", {})
    for declared in (*(spec.get("initContainers") or ()), *(spec.get("containers") or ())):
        if declared.get("name") == container:
            return str(declared.get("resources", {}).get("limits", {}).get("memory", ""))
    return ""


def _caused(pod: Mapping[str, Any]) -> bool:
    """Whether a failed worker failed on its own (or was disrupted), rather than lost its group to another's failure."""
    return _disruption(pod) is not None or _exit(pod).get("exitCode") != EXIT_INTERRUPTED


def failure(pod: Mapping[str, Any]) -> str:
    """How a failed worker pod ended, naming the worker: its disruption, or the exit of the container that failed."""
    index = _worker(pod)
    worker = f"worker {index} (pod {worker_pods.name(pod)})" if index is not None else f"pod {worker_pods.name(pod)}"
    if (disruption := _disruption(pod)) is not None:
        why = disruption.get("message") or "stopped from outside"
        return f"{worker} was disrupted: {disruption.get('reason') or 'DisruptionTarget'}: {why}"
    terminated = _exit(pod)
    if not terminated:
        return ""
    code = terminated.get("exitCode")
    if terminated.get("reason") == "OOMKilled":
        limit = _memory_limit(pod, terminated["container"])
        at = f" at its memory limit of {limit} (resources.memory)" if limit else ""
        return f"{worker}: container {terminated['container']} was OOMKilled (exit code {code}): out of memory{at}"
    if terminated.get("message"):
        return f"{worker}: exit code {code}: {terminated['message'].strip()}"
    return f"{worker}: exit code {code} ({terminated.get('reason', 'Error')})"


def termination_message(pods: Iterable[Mapping[str, Any]]) -> str:
    """Why workers failed last: of each worker's newest failure, the newest cause, else the newest of all.

    A worker that lost its group (EXIT_INTERRUPTED) is the effect of another's failure, whose story
    (out of memory, a crash, a preemption) is the one to tell even when its peers ended after it. Each
    worker's newest failure only, so that the cause of an earlier restart does not speak for a later
    one whose workers were all interrupted.
    """
    newest: dict[str, Mapping[str, Any]] = {}
    for pod in sorted(pods, key=lambda pod: _pod_end(pod) or _EARLIEST):
        if pod.get("status", {}).get("phase") == "Failed":
            newest[_worker(pod) or worker_pods.name(pod)] = pod

    def cause_then_end(pod: Mapping[str, Any]) -> tuple[bool, datetime]:
        return _caused(pod), _pod_end(pod) or _EARLIEST

    return next(
        (said for pod in sorted(newest.values(), key=cause_then_end, reverse=True) if (said := failure(pod))), ""
    )


def exported_version(pods: Iterable[Mapping[str, Any]]) -> int | None:
    """The model version a succeeded worker announced in its termination message, if any."""
    for pod in pods:
        if pod.get("status", {}).get("phase") != "Succeeded":
            continue
        for status in pod.get("status", {}).get("containerStatuses") or ():
            message = status.get("state", {}).get("terminated", {}).get("message", "")
            try:
                version = json.loads(message).get("modelVersion") if message.startswith("{") else None
            except (ValueError, RecursionError):
                # The worker's code writes the message: anything, nested as deep as 4096 bytes allow.
                continue
            if isinstance(version, int):
                return version
    return None


# The Job controller's reasons for failing a Job because of a worker's failure (not its deadline):
# that failure ended the run instead of restarting the group.
_ENDED_BY_A_WORKER: Final = frozenset({"BackoffLimitExceeded", MAX_FAILED_INDEXES_EXCEEDED, "PodFailurePolicy"})


def group_restarts(pods: Iterable[Mapping[str, Any]], *, ended_by_a_worker: bool) -> int:
    """Times the group restarted: the workers' failures, each worker that failed on its own counted
    once and the peers it interrupted (EXIT_INTERRUPTED) not at all, less the one that failed the run.

    Peers that ended interrupted with no failed worker among the pods (its pod was deleted, say)
    count as one restart.
    """
    failed = [pod for pod in pods if pod.get("status", {}).get("phase") == "Failed"]
    causes = sum(1 for pod in failed if _caused(pod)) or min(1, len(failed))
    return max(0, causes - 1) if ended_by_a_worker else causes


class Workers(NamedTuple):
    """How many workers run, whether that is enough for training to go on, and the Running condition's
    reason and message while the Job runs."""

    running: int
    started: bool
    reason: str
    message: str


# A Job lacks pods for a moment once the Job controller has started it (it creates them in the same
# pass) and while it backs off after a failure; beyond this, a Job that still lacks them is asked why
# (its FailedCreate Events). Counted from the Job's startTime, not its creation: a Job controller
# with a backlog (a thousand Jobs made at once) starts a Job late, and then makes its pods at once.
NOT_CREATED_AFTER: Final = timedelta(seconds=10)
# FailedCreate Events older than this tell of an earlier refusal, not of why pods are missing now:
# the Job controller tries again at least every few minutes (its backoff's cap), and says so again.
_RECENT: Final = timedelta(minutes=10)


def workers_missing(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime) -> bool:
    """Whether a Job that should run has had fewer worker pods than it runs for longer than NOT_CREATED_AFTER
    since the Job controller started it."""
    spec, job_status = job.get("spec", {}), job.get("status", {})
    if spec.get("suspend") or _job_condition(job, "Complete") or _job_condition(job, "Failed"):
        return False
    started = _parse(job_status.get("startTime"))
    if started is None or now - started < NOT_CREATED_AFTER:
        return False
    wanted = (spec.get("parallelism") or 0) - (job_status.get("succeeded") or 0)
    alive = sum(1 for pod in pods if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"))
    return max(job_status.get("active") or 0, alive) < wanted


def not_created(events: Iterable[Mapping[str, Any]], now: datetime) -> str | None:
    """The API server's words in the newest recent FailedCreate Event of a Job, or None."""

    def when(event: Mapping[str, Any]) -> datetime:
        series = (event.get("series") or {}).get("lastObservedTime")
        said = series or event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
        return _parse(said) or _EARLIEST

    recent = [event for event in events if now - when(event) <= _RECENT]
    if not recent:
        return None
    newest = max(recent, key=when)
    return worker_pods.one_line(str(newest.get("message") or "no message"))


def workers_running(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], min_workers: int | None, refused: str | None = None
) -> Workers:
    """Whether enough workers run for training to go on, and if not, why.

    Training goes on when every worker runs (torchrun's rendezvous waits for all `--nnodes`), or with
    `elastic`, at least `min_workers`. A Job's `active` counts pods still waiting to be scheduled or to
    start, so the pods themselves say whether they run, and if not, why (the scheduler's or the kubelet's
    reason and words, for the first pod by name that has one). The Job's `ready` covers pods the cache
    has not caught up with. `refused` is why the Job controller cannot create the pods it lacks (see
    `not_created`): before a pod exists, nothing else says why.
    """
    workers = job.get("spec", {}).get("parallelism") or 0
    running = max(job.get("status", {}).get("ready") or 0, sum(1 for pod in pods if worker_pods.running(pod)))
    needed = max(1, min(min_workers or workers, workers))
    counted = f"{running}/{workers} workers running"
    problem = worker_pods.first_problem(pods) if running < workers else None
    cannot_create = f"The Job cannot create worker pods: {refused}" if refused else ""
    if running >= needed:
        waiting = " ".join(said for said in (problem.message if problem else "", cannot_create) if said)
        return Workers(running, True, WORKERS_RUNNING, f"{counted}. {waiting}".rstrip())
    if needed < workers:
        counted += f" (training needs {needed})"
    if problem is None and cannot_create:
        return Workers(running, False, WORKERS_NOT_CREATED, f"{counted}. {cannot_create}")
    if problem is None:
        return Workers(running, False, WORKERS_PENDING, f"{counted}; the others are being scheduled or starting.")
    reason = problem.reason if problem.reason in POD_START_PROBLEMS else WORKERS_PENDING
    return Workers(running, False, reason, f"{counted}. {problem.message}")


def observed(
    status: Mapping[str, Any],
    *,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: datetime,
    min_workers: int | None = None,
    refused: str | None = None,
) -> dict[str, Any]:
    """Status fields to patch, from the Job and its pods (None: the Job does not exist yet).

    `min_workers` is the fewest workers an elastic job trains with (None: every worker); `refused`,
    why the Job cannot create the pods it lacks (None: nothing says it cannot).
    """
    conditions = Conditions(status.get("conditions", []), generation=generation, now=now)
    mark = conditions.mark

    patch: dict[str, Any] = {}
    if job is None and status.get("phase") in FINISHED_PHASES:
        # The outcome stays when the finished Job goes.
        return patch
    if job is None:
        mark(CREATED, False, CREATING, "The workers' Job does not exist yet.")
        patch.update(phase="Pending", conditions=conditions.items)
        return patch

    job_status = job.get("status", {})
    workers = job.get("spec", {}).get("parallelism") or 0
    ready = job_status.get("ready") or 0
    complete, failed = _job_condition(job, "Complete"), _job_condition(job, "Failed")
    restarts = group_restarts(pods, ended_by_a_worker=failed is not None and failed.get("reason") in _ENDED_BY_A_WORKER)
    suspended = _job_condition(job, "Suspended")
    running = workers_running(job, pods, min_workers, refused)
    started = running.started and bool(job_status.get("active"))

    mark(CREATED, True, JOB_CREATED, f"Job {job['metadata']['name']} runs {workers} worker pod(s).")
    if complete:
        phase = "Succeeded"
        mark(SUCCEEDED, True, COMPLETED, "Every worker finished.")
    elif failed:
        phase = "Failed"
        reason = failed.get("reason") or JOB_FAILED
        if reason == MAX_FAILED_INDEXES_EXCEEDED:
            # runPolicy.backoffLimit exceeded, in the words of the TrainingJob's field and of a Job
            # made by an earlier release, which counted failures Job-wide.
            reason = BACKOFF_LIMIT_EXCEEDED
        detail = termination_message(pods) or failed.get("message", "")
        mark(FAILED, True, reason, detail)
    elif suspended:
        phase = "Suspended"
    elif started or status.get("phase") == "Running":
        # A run that started stays Running while a worker is replaced (Restarting says so, and the
        # Running condition why the replacement waits): it resumes from its checkpoint, it does not start anew.
        phase = "Running"
    else:
        phase = "Pending"
    finished = bool(complete or failed)
    if not complete:
        mark(SUCCEEDED, False, FAILED if failed else NOT_FINISHED)
    if not failed:
        mark(FAILED, False, NO_FAILURE)
    mark(SUSPENDED, bool(suspended), JOB_SUSPENDED if suspended else NOT_SUSPENDED)
    if finished or suspended:
        mark(RUNNING, False, phase, f"{running.running}/{workers} workers running.")
    else:
        mark(RUNNING, started, running.reason, running.message)
    restarting = not finished and restarts > 0 and ready < workers
    mark(RESTARTING, restarting, WORKER_FAILED if restarting else NOT_RESTARTING, termination_message(pods))

    patch.update(phase=phase, conditions=conditions.items, restarts=restarts, gpuHours=gpu_hours(pods, now))
    if job_status.get("startTime"):
        patch["startTime"] = job_status["startTime"]
    # The worker patches modelVersion itself; its termination message covers a lost patch.
    if complete and not status.get("modelVersion") and (version := exported_version(pods)):
        patch["modelVersion"] = version
    if finished:
        end = job_status.get("completionTime") or (failed or {}).get("lastTransitionTime") or timestamp(now)
        patch["completionTime"] = end
    return patch
