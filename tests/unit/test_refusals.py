"""What the API server refuses, told apart: the object's fault (reported on its owner) from the operator's.

The bodies are the API server's own Status answers (kube-apiserver v1.36, as the test control plane
runs it), to a server-side apply: the quota's, a ValidatingAdmissionPolicy's, RBAC's and the typed
patch's. A refusal of the object is reported in SpecApplied and not raised; a denial (a quota, a
policy) is tried again by the periodic resync; the operator's own rights missing stay an error.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException

from scaleml_operator.handlers import resync as resync_module
from scaleml_operator.handlers.loop import HANDLED
from scaleml_operator.handlers.resync import resync
from scaleml_operator.kube.apply import DeniedError, RejectedError, refusal
from scaleml_operator.reconcile import cache
from scaleml_operator.status.acceptance import applied, applied_events, child_denied
from scaleml_operator.status.conditions import find_condition

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)

QUOTA_SERVICE = (
    'services "churn" is forbidden: exceeded quota: svc, requested: services=1, used: services=0, limited: services=0'
)
QUOTA_JOB = (
    'jobs.batch "churn" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, '
    "used: count/jobs.batch=0, limited: count/jobs.batch=0"
)
POLICY = "ValidatingAdmissionPolicy 'no-cm' with binding 'no-cm' denied request: no configmaps here"
UNTYPED = (
    "failed to create typed patch object (ml/churn; autoscaling/v2, Kind=HorizontalPodAutoscaler): "
    ".spec.metrics[0].pods.targetAverageValue: field not declared in schema"
)
GATEKEEPER = 'admission webhook "validation.gatekeeper.sh" denied the request'
OPERATOR = "system:serviceaccount:scaleml-system:scaleml-operator"


def _status(code: int, message: str, reason: str = "", **details: Any) -> ApiException:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    body.update(message=message, code=code)
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = details
    return ApiException(status=code, reason=reason or "Error", body=json.dumps(body))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(
            _status(403, QUOTA_SERVICE, "Forbidden", name="churn", kind="services"), QUOTA_SERVICE, id="service quota"
        ),
        pytest.param(
            _status(403, QUOTA_JOB, "Forbidden", name="churn", group="batch", kind="jobs"), QUOTA_JOB, id="job quota"
        ),
        pytest.param(
            _status(
                403,
                f'configmaps "c" is forbidden: {POLICY}',
                "Forbidden",
                name="c",
                kind="configmaps",
                causes=[{"message": POLICY}],
            ),
            f'configmaps "c" is forbidden: {POLICY}',
            id="admission policy, reason Forbidden",
        ),
        pytest.param(
            _status(403, f"{GATEKEEPER}: [no-lb] LoadBalancers are not allowed"),
            f"{GATEKEEPER}: [no-lb] LoadBalancers are not allowed",
            id="webhook with a 403",
        ),
        pytest.param(
            _status(400, 'admission webhook "policy.example.com" denied the request: policy require-team'),
            'admission webhook "policy.example.com" denied the request: policy require-team',
            id="webhook that chose no code",
        ),
    ],
)
def test_what_the_clusters_admission_denies_may_go_through_later(error: ApiException, message: str) -> None:
    refused = refusal(error)
    assert isinstance(refused, DeniedError)
    assert str(refused) == message


@pytest.mark.parametrize(
    ("error", "message"),
    [
        pytest.param(_status(500, UNTYPED), UNTYPED, id="a field the schema does not declare"),
        pytest.param(
            _status(
                422, 'HorizontalPodAutoscaler.autoscaling "churn" is invalid: spec.metrics[0].pods.target: Required'
            ),
            'HorizontalPodAutoscaler.autoscaling "churn" is invalid: spec.metrics[0].pods.target: Required',
            id="invalid",
        ),
    ],
)
def test_what_the_api_server_cannot_take_waits_for_a_spec_change(error: ApiException, message: str) -> None:
    refused = refusal(error)
    assert isinstance(refused, RejectedError)
    assert str(refused) == message


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            _status(
                403,
                f'jobs.batch "churn" is forbidden: User "{OPERATOR}" cannot patch resource "jobs" in API group "batch" '
                'in the namespace "ml"',
                "Forbidden",
                name="churn",
                group="batch",
                kind="jobs",
            ),
            id="RBAC: no patch",
        ),
        pytest.param(
            _status(
                403,
                f'services "churn" is forbidden: User "{OPERATOR}" cannot create resource "services" in API group "" '
                'in the namespace "ml"',
                "Forbidden",
                name="churn",
                kind="services",
            ),
            id="RBAC: no create, for the apply that creates",
        ),
        pytest.param(
            _status(
                403,
                'jobs.batch "churn" is forbidden: cannot set blockOwnerDeletion if an ownerReference refers to a '
                "resource you can't set finalizers on: , <nil>",
                "Forbidden",
            ),
            id="no update on the owner's finalizers",
        ),
        pytest.param(ApiException(status=403, reason="Forbidden", body="forbidden"), id="403 from no API server"),
        pytest.param(_status(500, "etcdserver: request timed out"), id="the API server failing"),
        pytest.param(_status(409, "Operation cannot be fulfilled", "Conflict"), id="conflict"),
    ],
)
def test_the_operators_own_rights_and_the_api_servers_failures_stay_errors(error: ApiException) -> None:
    # Raised as they are: retried with a backoff and logged, never blamed on the user's spec.
    assert refusal(error) is None


def _spec_applied(*, denied: bool, rejected: list[str]) -> dict[str, Any]:
    conditions = applied({}, foreign=[], rejected=rejected, denied=denied, kept_back="", generation=3, now=NOW)
    condition = find_condition(conditions, "SpecApplied")
    assert condition is not None
    return {"conditions": conditions, **condition}


def test_a_denial_is_reported_with_the_api_servers_words_and_a_warning_and_marked_to_try_again() -> None:
    said = [f"Service churn: {QUOTA_SERVICE}"]
    status = _spec_applied(denied=True, rejected=said)
    assert (status["status"], status["reason"], status["message"]) == ("False", "ChildDenied", said[0])
    assert child_denied(status)
    events = applied_events({}, status)
    assert [(event.type, event.reason, event.message) for event in events] == [("Warning", "SpecNotApplied", said[0])]
    # Once it goes through, the condition clears.
    cleared = applied(status, foreign=[], rejected=[], denied=False, kept_back="", generation=3, now=NOW)
    assert not child_denied({"conditions": cleared})
    assert (find_condition(cleared, "SpecApplied") or {}).get("status") == "True"


def test_an_invalid_child_is_not_tried_again_as_it_is() -> None:
    status = _spec_applied(denied=False, rejected=[f"HorizontalPodAutoscaler churn: {UNTYPED}"])
    assert status["reason"] == "ChildRejected"
    assert not child_denied(status)


def _parent(uid: str, name: str, reason: str) -> dict[str, Any]:
    applied_condition = {"type": "SpecApplied", "status": "False", "reason": reason, "message": "..."}
    return {
        "metadata": {"uid": uid, "name": name, "namespace": "ml", "generation": 1},
        "status": {"conditions": [applied_condition]},
    }


def test_the_resync_runs_in_full_only_the_objects_with_a_child_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    denied, rejected = _parent("uid-d", "d", "ChildDenied"), _parent("uid-r", "r", "ChildRejected")
    indexes: dict[str, dict[object, object]] = {index: {} for index in cache.PARENTS.values()}
    for body in (denied, rejected):
        indexes[cache.PARENTS["TrainingJob"]][("ml", body["metadata"]["name"])] = [body]
        HANDLED.done(body)
    full: dict[str, bool] = {}

    async def run(reconciler: object, name: str, namespace: str, *_: object) -> None:
        full[name] = HANDLED.due(denied if name == "d" else rejected)

    monkeypatch.setattr(resync_module, "run", run)

    async def one_pass() -> None:
        task = asyncio.create_task(resync(kopf.Memo(), indexes, period=0.02))
        await asyncio.sleep(0.1)
        task.cancel()

    try:
        asyncio.run(one_pass())
    finally:
        for body in (denied, rejected):
            HANDLED.forget(body["metadata"]["uid"])
    assert full == {"d": True, "r": False}
