"""Which Job is a TrainingJob's, and when it gets one: a TrainingJob of a reused name, and one whose Job went."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders.meta import Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile import trainingjob as training
from scaleml_operator.reconcile.loop import Applied, Context
from tests.support.manifests import example

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
OWNER = Owner("TrainingJob", "churn", "ml", "new-uid")
SPEC = TrainingJobSpec.model_validate(example("TrainingJob")["spec"])


def _controlled(uid: str) -> dict[str, Any]:
    return {"ownerReferences": [{"uid": uid, "controller": True}]}


def _finished_job(owner_uid: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn", "uid": f"job-of-{owner_uid}", **_controlled(owner_uid)},
        "spec": {"parallelism": 1},
        "status": {"conditions": [{"type": "Complete", "status": "True"}], "completionTime": "2026-12-01T00:00:00Z"},
    }


def _context(*jobs: dict[str, Any]) -> Context:
    pods = [
        {"metadata": {"name": f"churn-{i}", **_controlled(job["metadata"]["uid"])}, "status": {"phase": "Succeeded"}}
        for i, job in enumerate(jobs)
    ]
    key = ("ml", "churn")
    return Context(OperatorConfig(), {cache.JOBS: {key: list(jobs)}, cache.TRAINING_PODS: {key: pods}})


def _parent(phase: str | None) -> dict[str, Any]:
    return {"metadata": {"name": "churn", "uid": OWNER.uid}, "status": {"phase": phase} if phase else {}}


def _kinds(inputs: training.Inputs) -> list[str]:
    return [manifest["kind"] for manifest in training.children(OWNER, SPEC, inputs, OperatorConfig()).apply]


def _observed(parent: dict[str, Any], inputs: training.Inputs) -> dict[str, Any]:
    return training.observed(parent["status"], OWNER, SPEC, inputs, Applied(), generation=1, now=NOW)


def test_a_predecessors_job_of_the_same_name_is_not_this_trainingjobs() -> None:
    # Deleted and created again under its name: the old Job waits for the garbage collector.
    parent = _parent(None)
    inputs = training.read(OWNER, SPEC, parent, _context(_finished_job("old-uid")))
    assert (inputs.job, inputs.pods) == (None, [])
    assert _observed(parent, inputs)["phase"] == "Pending"
    # Once it is gone, the next run makes this object's own.
    assert training.stale(inputs)
    assert _kinds(inputs)[-1] == "Job"


def test_its_own_job_and_only_that_jobs_pods_are_read() -> None:
    parent = _parent("Running")
    inputs = training.read(OWNER, SPEC, parent, _context(_finished_job(OWNER.uid)))
    assert inputs.job is not None
    assert [pod["metadata"]["name"] for pod in inputs.pods] == ["churn-0"]
    assert _observed(parent, inputs)["phase"] == "Succeeded"
    assert not training.stale(inputs)


def test_a_finished_trainingjob_whose_job_went_keeps_its_outcome_and_trains_no_more() -> None:
    parent = _parent("Succeeded")
    inputs = training.read(OWNER, SPEC, parent, _context())
    assert inputs.finished
    assert not training.stale(inputs)
    assert "Job" not in _kinds(inputs)
    assert _observed(parent, inputs) == {}


def test_a_job_that_went_before_it_finished_is_made_again() -> None:
    inputs = training.read(OWNER, SPEC, _parent("Running"), _context())
    assert training.stale(inputs)
    assert _kinds(inputs)[-1] == "Job"
