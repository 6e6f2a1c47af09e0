"""What the retraining step trusts: the retraining TrainingJobs and their Jobs, never what the monitor's pod writes.

Any pod of the namespace may run as the monitor's ServiceAccount (`NAME-monitor`) and write the
DriftMonitor's whole status, or as a retraining job's (`JOB-trainer`) and write that job's status.
A forged run of windows may call for a job; the cooldown and "one at a time" still hold.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec, RetrainPolicy
from scaleml_operator.builders import retraining
from scaleml_operator.builders.meta import Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile import driftmonitor as monitoring
from scaleml_operator.reconcile.loop import Applied, Context
from scaleml_operator.status.conditions import timestamp
from tests.support.manifests import example, merged

OWNER = Owner("DriftMonitor", "churn", "ml", "monitor-uid")
MONITOR = {"name": "churn", "namespace": "ml", "uid": OWNER.uid, "creationTimestamp": "2026-11-01T00:00:00Z"}
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
POLICY = RetrainPolicy(enabled=True, after=3, cooldown="2h")


def _forged(since: str) -> dict[str, Any]:
    """What the probe's pod wrote as churn-monitor: a fresh run of drifted windows, and no record of a last job."""
    return {
        "driftDetected": True,
        "consecutiveDriftedWindows": 3,
        "driftSince": since,
        "lastRetrainJob": None,
        "lastRetrainTime": None,
        "retrainsTriggered": 0,
    }


def _retraining_job(name: str, created: datetime, *, phase: str, since: str = "2026-11-23T09:00:00Z") -> dict[str, Any]:
    return merged(
        example("TrainingJob"),
        {
            "metadata": {
                "name": name,
                "namespace": "ml",
                "uid": f"{name}-uid",
                "creationTimestamp": timestamp(created),
                "labels": {retraining.RETRAINED_BY_LABEL: "churn", retraining.RETRAIN_OF_LABEL: "churn"},
                "annotations": {retraining.DRIFT_SINCE_ANNOTATION: since, retraining.RETRAIN_RULE_ANNOTATION: "drift"},
            },
            "status": {"phase": phase},
        },
    )


def _workers(job: dict[str, Any], *, complete: bool) -> dict[str, Any]:
    """The TrainingJob's Job, as the Job controller reports on it."""
    conditions = [{"type": "Complete", "status": "True"}] if complete else []
    return {
        "metadata": {
            "name": job["metadata"]["name"],
            "uid": f"job-of-{job['metadata']['uid']}",
            "ownerReferences": [{"uid": job["metadata"]["uid"], "controller": True}],
        },
        "status": {"conditions": conditions, "active": 0 if complete else 2},
    }


def _context(job: dict[str, Any], workers: dict[str, Any]) -> Context:
    """The operator's caches: the source TrainingJob, one retraining job with its Job, the target."""
    source = merged(example("TrainingJob"), {"metadata": {"namespace": "ml", "uid": "source-uid"}})
    source["status"] = {"phase": "Succeeded", "modelVersion": 1}
    target = merged(example("ModelDeployment"), {"metadata": {"namespace": "ml", "uid": "md-uid"}})
    target["status"] = {"servedVersion": 1}
    name = job["metadata"]["name"]
    indexes: dict[str, dict[Any, list[Any]]] = {index: {} for index in cache.PARENTS.values()}
    indexes[cache.PARENTS["TrainingJob"]] = {("ml", "churn"): [source], ("ml", name): [job]}
    indexes[cache.PARENTS["ModelDeployment"]] = {("ml", "churn"): [target]}
    indexes[cache.JOBS] = {("ml", name): [workers]}
    indexes[cache.RETRAININGS] = {("ml", "churn"): [name]}
    for index in (cache.MONITOR_DEPLOYMENTS, cache.SERVING_DEPLOYMENTS, cache.TRAINING_PODS, cache.SERVING_PODS):
        indexes[index] = {}
    return Context(OperatorConfig(), indexes)


def _spec(cooldown: str) -> DriftMonitorSpec:
    retrain = {"enabled": True, "after": 3, "cooldown": cooldown}
    return DriftMonitorSpec.model_validate(merged(example("DriftMonitor"), {"spec": {"retrain": retrain}})["spec"])


def _read(spec: DriftMonitorSpec, status: dict[str, Any], context: Context) -> monitoring.Inputs:
    return monitoring.read(OWNER, spec, {"metadata": MONITOR, "status": status}, context)


def test_a_status_that_forgets_the_last_job_does_not_end_the_cooldown() -> None:
    now = datetime.now(UTC)
    job = _retraining_job("churn-retrain-1", now - timedelta(minutes=30), phase="Succeeded")
    forged = _forged(timestamp(now - timedelta(minutes=1)))

    inputs = _read(_spec("24h"), forged, _context(job, _workers(job, complete=True)))

    assert inputs.retraining.job is None
    assert inputs.retraining.reason == "CooldownActive"
    # What the pod wrote over is the operator's report: written back from the job itself.
    patch = monitoring.observed(forged, OWNER, _spec("24h"), inputs, Applied(), generation=1, now=now)
    assert (patch["lastRetrainJob"], patch["lastRetrainTime"]) == (
        "churn-retrain-1",
        job["metadata"]["creationTimestamp"],
    )


def test_a_job_that_a_pod_reports_finished_runs_on_while_its_workers_job_does() -> None:
    # Run as churn-retrain-1-trainer, a pod writes phase Succeeded; the Job controller says the workers still run.
    now = datetime.now(UTC)
    job = _retraining_job("churn-retrain-1", now - timedelta(hours=3), phase="Succeeded")

    inputs = _read(_spec("1h"), _forged(timestamp(now)), _context(job, _workers(job, complete=False)))

    assert inputs.retraining.job is None
    assert (inputs.retraining.active, inputs.retraining.reason) == (True, "TrainingJobRunning")
    # Once the Job completes, the next run of windows retrains (the cooldown of 1h has passed).
    done = _read(_spec("1h"), _forged(timestamp(now)), _context(job, _workers(job, complete=True)))
    assert done.retraining.job is not None


def _step(past: list[retraining.Retrained], status: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    spec = _spec("2h")
    source = merged(example("TrainingJob"), {"metadata": {"namespace": "ml"}})
    return retraining.retrain(spec, MONITOR, status, past, source, now).job


def test_forged_runs_of_windows_make_one_job_per_cooldown() -> None:
    past: list[retraining.Retrained] = []
    created = []
    # A forged report every minute for five hours, each with a new run of windows and no last job.
    for minute in range(300):
        now = NOW + timedelta(minutes=minute)
        job = _step(past, _forged(timestamp(now)), now)
        if job is not None:
            created.append(now)
            job["metadata"].update(uid=f"uid-{minute}", creationTimestamp=timestamp(now))
            # The job runs ten minutes, then its Job completes.
            past = [retraining.Retrained(job, finished=False), *past]
        past = [
            retraining.Retrained(done.job, finished=now >= datetime.fromisoformat(done.created) + timedelta(minutes=10))
            for done in past
        ]
    assert created == [NOW, NOW + timedelta(hours=2), NOW + timedelta(hours=4)]


def test_runs_that_read_a_cache_without_the_newest_job_name_the_same_job() -> None:
    # Each forged report names a new run of windows; until the cache shows the job made for the first,
    # every step names that same job, which the API server refuses to create a second time.
    first = _step([], _forged("2026-11-23T11:00:00Z"), NOW)
    again = _step([], _forged("2026-11-23T11:01:00Z"), NOW)
    assert first is not None
    assert again is not None
    assert again["metadata"]["name"] == first["metadata"]["name"]
    # Its successor has a name of its own, and so does the successor of that one, even when both
    # were made within one second (the timestamps' precision).
    first["metadata"].update(uid="uid-1", creationTimestamp=timestamp(NOW))
    past = [retraining.Retrained(first, finished=True)]
    second = retraining.successor(MONITOR, past)
    assert second != first["metadata"]["name"]
    successor = {**first, "metadata": {**first["metadata"], "name": second, "uid": "uid-2"}}
    both = retraining.retrained([(first, None), (successor, None)])
    third = retraining.successor(MONITOR, both)
    assert third not in (first["metadata"]["name"], second)
    assert third == retraining.successor(MONITOR, list(reversed(both)))


def test_the_run_of_windows_that_had_its_job_does_not_retrain_again() -> None:
    since = "2026-11-23T09:00:00Z"
    job = _retraining_job("churn-retrain-1", NOW - timedelta(hours=5), phase="Succeeded", since=since)
    past = retraining.retrained([(job, _workers(job, complete=True))])
    held = retraining.decide(POLICY, {**_forged(since), "consecutiveDriftedWindows": 40}, past, NOW)
    assert (held.create, held.reason) == (False, "EpisodeRetrained")
    assert "churn-retrain-1" in held.message
    assert retraining.decide(POLICY, _forged("2026-11-23T11:00:00Z"), past, NOW).create


def test_a_retraining_job_lives_at_least_through_its_cooldown() -> None:
    # The TTL clean-up deletes a finished TrainingJob; the job is the record of the cooldown it starts.
    def ttl(source_ttl: int | None, cooldown: str) -> int | None:
        source = merged(
            example("TrainingJob"),
            {"metadata": {"namespace": "ml"}, "spec": {"runPolicy": {"ttlSecondsAfterFinished": source_ttl}}},
        )
        policy = RetrainPolicy(enabled=True, cooldown=cooldown)
        job = retraining.retraining_job(source, policy, name="churn-retrain-1", monitor="churn", drift_since="t0")
        value: int | None = job["spec"]["runPolicy"].get("ttlSecondsAfterFinished")
        return value

    assert ttl(600, "24h") == 86400
    assert ttl(172800, "24h") == 172800
    # The Job's field is an int32: a cooldown of 999999h (3.6e9 s) keeps the job as long as a Job can say.
    assert ttl(3600, "999999h") == 2**31 - 1
    # No time to live: kept until deleted by hand, as the source job.
    assert ttl(None, "24h") is None
