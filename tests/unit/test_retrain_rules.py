"""What `spec.retrain.when` counts: drift, degraded estimated accuracy, or either; and how each says so."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scaleml_api.v1alpha1 import DRIFT_MONITOR, TRAINING_JOB
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec, RetrainPolicy
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_operator.builders import retraining
from scaleml_operator.builders.meta import Owner
from scaleml_operator.builders.trainingjob import training_run
from scaleml_operator.status import driftmonitor as status
from tests.support.manifests import example, merged

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DRIFT_SINCE = "2026-11-23T10:00:00Z"
DEGRADED_SINCE = "2026-11-23T11:00:00Z"


def _policy(when: str) -> RetrainPolicy:
    return RetrainPolicy.model_validate({"enabled": True, "after": 3, "cooldown": "2h", "when": when})


def _status(drifted: int = 0, degraded: int = 0) -> dict[str, Any]:
    return {
        "driftDetected": drifted > 0,
        "consecutiveDriftedWindows": drifted,
        "driftSince": DRIFT_SINCE if drifted else None,
        "degraded": degraded > 0,
        "consecutiveDegradedWindows": degraded,
        "degradedSince": DEGRADED_SINCE if degraded else None,
    }


def test_drift_alone_is_the_default_and_ignores_degradation() -> None:
    assert DriftMonitorSpec.model_validate(example("DriftMonitor")["spec"]).retrain.when == "drift"
    assert retraining.decide(_policy("drift"), _status(degraded=9), [], NOW).reason == "NoDrift"
    due = retraining.decide(_policy("drift"), _status(drifted=3, degraded=9), [], NOW)
    assert (due.create, due.rule, due.since) == (True, "drift", DRIFT_SINCE)


def test_degradation_counts_degraded_windows_only() -> None:
    policy = _policy("degradation")
    assert retraining.decide(policy, _status(drifted=9), [], NOW).reason == "NotDegraded"
    waiting = retraining.decide(policy, _status(drifted=9, degraded=2), [], NOW)
    assert (waiting.create, waiting.reason) == (False, "DegradationNotPersistent")
    assert waiting.message == "2 of 3 degraded windows in a row."
    due = retraining.decide(policy, _status(degraded=3), [], NOW)
    assert (due.create, due.rule, due.since) == (True, "degradation", DEGRADED_SINCE)
    assert due.message == "The estimated accuracy stayed degraded for 3 windows."


def test_either_retrains_on_whichever_run_reaches_after_first() -> None:
    policy = _policy("either")
    assert retraining.decide(policy, _status(drifted=3, degraded=1), [], NOW).rule == "drift"
    assert retraining.decide(policy, _status(drifted=1, degraded=3), [], NOW).rule == "degradation"
    waiting = retraining.decide(policy, _status(drifted=2, degraded=1), [], NOW)
    assert (waiting.reason, waiting.message) == (
        "DriftNotPersistent",
        "2 of 3 drifted windows in a row; 1 of 3 degraded windows in a row.",
    )
    assert retraining.decide(policy, _status(drifted=1, degraded=2), [], NOW).reason == "DegradationNotPersistent"
    quiet = retraining.decide(policy, _status(), [], NOW)
    assert (quiet.reason, quiet.message) == ("NoDrift", "The last window neither drifted nor degraded.")


def test_the_cooldown_names_the_rule_that_persists() -> None:
    finished = {"metadata": {"name": "churn-retrain-1", "creationTimestamp": "2026-11-23T11:30:00Z"}}
    cooling = retraining.decide(
        _policy("degradation"), _status(degraded=5), [retraining.Retrained(finished, True)], NOW
    )
    assert cooling.reason == "CooldownActive"
    assert cooling.message.startswith("The estimated accuracy stays degraded;")


def test_a_degradation_retrain_records_its_run_and_every_report_says_which_rule() -> None:
    spec = DriftMonitorSpec.model_validate(
        merged(example("DriftMonitor"), {"spec": {"retrain": {"enabled": True, "after": 3, "when": "either"}}})["spec"]
    )
    source = merged(example("TrainingJob"), {"metadata": {"namespace": "ml"}})
    current = _status(drifted=1, degraded=3)

    verdict = retraining.retrain(spec, {"name": "churn", "uid": "9c0d"}, current, [], source, NOW)

    assert verdict.job is not None
    assert verdict.rule == "degradation"
    metadata = verdict.job["metadata"]
    assert metadata["name"] == retraining.job_name("churn", "9c0d", "")
    assert metadata["annotations"][retraining.RETRAIN_RULE_ANNOTATION] == "degradation"
    assert metadata["annotations"][retraining.DRIFT_SINCE_ANNOTATION] == DEGRADED_SINCE
    assert (verdict.reason, verdict.message) == (
        "TrainingJobRunning",
        f"TrainingJob {metadata['name']} retrains churn (degradation persisted).",
    )
    patch = status.retrained(
        current,
        (verdict.active, verdict.reason, verdict.message),
        last=(metadata["name"], "2026-11-23T12:00:00Z", verdict.rule or "drift"),
        generation=1,
        now=NOW,
    )
    assert patch["lastRetrainRule"] == "degradation"
    (event,) = [e for e in status.events(current, {**current, **patch}) if e.reason == "RetrainTriggered"]
    assert (
        event.message
        == f"Created TrainingJob {metadata['name']}: the estimated accuracy stayed degraded for 3 windows."
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"retrain": {"when": "sometimes"}}, "spec.retrain.when"),
        ({"thresholds": {"accuracyDrop": 0}}, "spec.thresholds.accuracyDrop"),
        ({"thresholds": {"accuracyDrop": 1.5}}, "spec.thresholds.accuracyDrop"),
    ],
)
def test_invalid_rules_and_thresholds_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSpecError, match=field.replace(".", r"\.")):
        parse_spec(DRIFT_MONITOR, merged(example("DriftMonitor"), {"spec": change})["spec"])


def test_a_retraining_job_carries_its_drift_episode_to_its_pods_and_model_card() -> None:
    source = merged(example("TrainingJob"), {"metadata": {"namespace": "ml"}})
    policy = RetrainPolicy.model_validate({"enabled": True})
    job = retraining.retraining_job(
        source, policy, name="churn-retrain-1", monitor="churn", drift_since="2026-12-05T03:00:00Z", rule="degradation"
    )
    lineage = retraining.lineage(job["metadata"])
    assert lineage is not None
    assert lineage.to_wire() == {
        "retrainedBy": "churn",
        "retrainOf": "churn",
        "since": "2026-12-05T03:00:00Z",
        "rule": "degradation",
    }
    owner = Owner("TrainingJob", "churn-retrain-1", "ml", "uid-1")
    spec = parse_spec(TRAINING_JOB, job["spec"])
    assert training_run(owner, spec, lineage).lineage == lineage
    # A job created by hand has none, and its pods' config is as it was.
    assert retraining.lineage(source["metadata"]) is None
    assert "lineage" not in training_run(owner, spec).model_dump_json(by_alias=True)


def test_a_held_back_retrained_version_is_named_in_the_monitors_status() -> None:
    job = {"metadata": {"name": "churn-retrain-1"}, "status": {"phase": "Succeeded", "modelVersion": 3}}
    promoted = {
        "type": "Promoted",
        "status": "False",
        "reason": "GateFailed",
        "message": "Version 3 failed: minMetric.",
    }
    deployment = {"metadata": {"name": "churn"}, "status": {"candidateVersion": 3, "conditions": [promoted]}}
    assert retraining.held_back(job, deployment) == (
        "Version 3, which TrainingJob churn-retrain-1 exported, is held back by ModelDeployment churn's promotion "
        "gates: Version 3 failed: minMetric."
    )
    assert retraining.held_back(job, {"metadata": {"name": "churn"}, "status": {"servedVersion": 3}}) == ""
