"""A TrainingJob's Job applied again while it runs, against the real API server: what it cannot take is kept.

The API server refuses a change of a Job's pod template, size, pod failure policy or per-index
limit, and refuses maxFailedIndexes without a per-index limit. `build.job_to_apply` keeps those as
the Job runs them; these tests show the server takes what it keeps, where the desired Job is refused.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import trainingjob as build
from scaleml_operator.builders.meta import Owner
from scaleml_operator.kube import apply as kube
from tests.support.controlplane import ControlPlane
from tests.support.manifests import example, merged

pytestmark = pytest.mark.apiserver

IMAGE = "registry.example/scaleml/workloads:1"


@pytest.fixture(autouse=True)
def _kubeconfig(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))


def _job(owner: Owner, **changes: Any) -> dict[str, Any]:
    spec = TrainingJobSpec.model_validate(merged(example("TrainingJob"), {"spec": changes})["spec"])
    return build.batch_job(owner, spec, IMAGE)


def test_a_job_made_before_per_worker_limits_keeps_its_policy_and_takes_the_rest(namespace: str) -> None:
    owner = Owner("TrainingJob", "churn", namespace, str(uuid.uuid4()))
    # The Job as an earlier release made it: a Job-wide limit, and 137 and 143 ignored.
    earlier = json.loads(json.dumps(_job(owner, runPolicy={"suspend": True})))
    for name in ("backoffLimitPerIndex", "maxFailedIndexes"):
        del earlier["spec"][name]
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1, 2, 126, 127]}},
            {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [137, 143]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    earlier["spec"].update(backoffLimit=3, podFailurePolicy=policy)
    live = kube.apply(earlier)

    desired = _job(owner)  # resumed
    with pytest.raises(kube.RejectedError, match="podFailurePolicy"):
        kube.apply(desired)
    job, kept_back = build.job_to_apply(desired, live)
    assert job is not None
    applied = kube.apply(job)
    assert applied["spec"]["suspend"] is False
    assert applied["spec"]["podFailurePolicy"] == live["spec"]["podFailurePolicy"]
    assert applied["spec"]["backoffLimit"] == 3
    assert "backoffLimitPerIndex" not in applied["spec"]
    assert "maxFailedIndexes" not in applied["spec"]
    assert "spec.podFailurePolicy" in kept_back


def test_a_changed_backoff_limit_is_kept_back_from_a_started_job(namespace: str) -> None:
    owner = Owner("TrainingJob", "churn", namespace, str(uuid.uuid4()))
    live = kube.apply(_job(owner, runPolicy={"suspend": True, "backoffLimit": 3}))
    assert (live["spec"]["backoffLimitPerIndex"], live["spec"]["backoffLimit"]) == (3, 2**31 - 1)
    desired = _job(owner, runPolicy={"backoffLimit": 5})
    with pytest.raises(kube.RejectedError, match="backoffLimitPerIndex"):
        kube.apply(desired)
    job, kept_back = build.job_to_apply(desired, live)
    assert job is not None
    applied = kube.apply(job)
    assert (applied["spec"]["backoffLimitPerIndex"], applied["spec"]["suspend"]) == (3, False)
    assert kept_back.startswith("The running Job keeps its spec.backoffLimitPerIndex:")
