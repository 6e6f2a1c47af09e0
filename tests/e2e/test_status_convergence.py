"""What only the operator's periodic resync can mend: a refused last status write, children deleted by hand.

kopf does not retry a watch-event handler that failed. Here the API server refuses the operator's
status write that says Succeeded (a ValidatingAdmissionPolicy on trainingjobs/status), at the moment
the Job completes. Once the refusal is lifted no further event comes (the Job is done): only the
operator's periodic resync can still bring the TrainingJob's status to what its Job says.

The children the operator does not watch (ServiceAccount, RoleBinding, Service, ConfigMap) send it
no event when someone deletes them: its periodic sweep finds them gone and applies them again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_trainingjob import _condition, _patch_spec, _phase, _training_job
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.operator_process import OperatorProcess, start_operator
from tests.support.policies import refusal
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

RESYNC_SECONDS = 5


@pytest.fixture(scope="module")
def resyncing_operator(
    cluster: ControlPlane, scaleml_installed: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as its ServiceAccount, resyncing every few seconds so that the test need not wait long."""
    process = start_operator(cluster, tmp_path_factory, "e2e-resync-operator", f"--resync-seconds={RESYNC_SECONDS}")
    yield process
    process.stop()


def _refusal(namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A policy and its binding: in `namespace`, no TrainingJob status may say Succeeded."""
    rule = {
        "apiGroups": ["scaleml.dev"],
        "apiVersions": ["*"],
        "operations": ["UPDATE"],
        "resources": ["trainingjobs/status"],
    }
    return refusal(
        f"refuse-succeeded-{namespace}",
        namespace,
        rule,
        "!has(object.status) || !has(object.status.phase) || object.status.phase != 'Succeeded'",
        "refused by the test: the status may not say Succeeded yet",
    )


def _refused(kubectl: Kubectl, namespace: str) -> bool:
    """Whether a status write saying Succeeded is refused now (a server-side dry run, which changes nothing)."""
    attempt = kubectl.run(
        "patch",
        "trainingjob",
        "churn",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Succeeded"}}),
        "--dry-run=server",
        check=False,
    )
    return attempt.returncode != 0 and "refused by the test" in attempt.stderr


def test_a_refused_final_status_write_converges_once_the_api_server_accepts_it(
    kubectl: Kubectl, claims_namespace: str, resyncing_operator: OperatorProcess
) -> None:
    namespace = claims_namespace
    policy, binding = _refusal(namespace)
    kubectl.apply(policy)
    kubectl.apply(binding)
    try:
        kubectl.apply(_training_job(runPolicy={"suspend": True}), "-n", namespace)
        wait_for(lambda: _phase(kubectl, namespace, "Suspended"), 60, "the TrainingJob to be suspended")
        wait_for(lambda: _refused(kubectl, namespace), 30, "the API server to refuse a Succeeded status")

        _patch_spec(kubectl, namespace, {"runPolicy": {"suspend": False}})
        done = wait_for(lambda: _job_complete(kubectl, namespace), 90, "the Job to complete")
        # Refused: the operator tried and the TrainingJob still says what it said before.
        wait_for(
            lambda: "refused by the test" in resyncing_operator.output(), 30, "the operator's refused status write"
        )
        assert (kubectl.find("trainingjob", "churn", namespace) or {})["status"]["phase"] != "Succeeded"
    finally:
        kubectl.run("delete", "validatingadmissionpolicybinding", binding["metadata"]["name"], check=False)
        kubectl.run("delete", "validatingadmissionpolicy", policy["metadata"]["name"], check=False)

    # Nothing about the Job changes from now on: only the resync can bring the status along.
    succeeded = wait_for(
        lambda: _phase(kubectl, namespace, "Succeeded"), 6 * RESYNC_SECONDS + 30, "the TrainingJob to succeed"
    )
    assert _condition(succeeded, "Succeeded")["status"] == "True"
    assert succeeded["status"]["completionTime"]
    assert done["status"]["succeeded"] == 2


def _job_complete(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    job = kubectl.find("job", "churn", namespace)
    conditions = (job or {}).get("status", {}).get("conditions") or ()
    complete = any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)
    return job if complete else None


# The children of a TrainingJob that no watch of the operator follows: kubectl resource -> kind.
UNWATCHED = {
    "serviceaccounts": "ServiceAccount",
    "rolebindings.rbac.authorization.k8s.io": "RoleBinding",
    "services": "Service",
    "configmaps": "ConfigMap",
}


def _children(kubectl: Kubectl, namespace: str, owner_uid: str) -> dict[tuple[str, str], str]:
    """(resource, name) -> uid of the objects of UNWATCHED kinds that the object `owner_uid` controls."""
    found: dict[tuple[str, str], str] = {}
    for resource in UNWATCHED:
        listed = json.loads(kubectl.run("get", resource, "-n", namespace, "-o", "json").stdout)
        for item in listed["items"]:
            references = item["metadata"].get("ownerReferences") or ()
            if any(ref["uid"] == owner_uid and ref.get("controller") for ref in references):
                found[(resource, item["metadata"]["name"])] = item["metadata"]["uid"]
    return found


def test_children_deleted_by_hand_are_made_again_within_a_resync_period(
    kubectl: Kubectl, claims_namespace: str, resyncing_operator: OperatorProcess
) -> None:
    namespace = claims_namespace
    kubectl.apply(_training_job(runPolicy={"suspend": True}), "-n", namespace)
    job = wait_for(lambda: _phase(kubectl, namespace, "Suspended"), 60, "the TrainingJob to be suspended")
    before = _children(kubectl, namespace, job["metadata"]["uid"])
    assert {resource for resource, _ in before} == set(UNWATCHED), before

    # At once: deleted one by one, a sweep between two deletions would run the owner in full, and that
    # run would make anew a child deleted after the sweep listed it, before any sweep saw it gone.
    kubectl.run("delete", *(f"{resource}/{name}" for resource, name in before), "-n", namespace)

    def made_again() -> dict[tuple[str, str], str] | None:
        now = _children(kubectl, namespace, job["metadata"]["uid"])
        return now if set(now) == set(before) else None

    after = wait_for(made_again, 3 * RESYNC_SECONDS + 15, "the deleted children to be made again")
    # New objects, not the old ones seen late.
    assert not set(after.values()) & set(before.values())
    # The operator's log says which, for this TrainingJob.
    said = " ".join(
        line
        for line in resyncing_operator.output().splitlines()
        if f"TrainingJob {namespace}/churn: " in line and "deleted outside the operator" in line
    )
    for resource, name in before:
        assert f"{UNWATCHED[resource]} {name}" in said
    # Its status did not move: the sweep made no transition.
    assert _phase(kubectl, namespace, "Suspended")
