"""The operator under faults: killed at random moments, its API server restarted, its rights revoked.

Each test runs its own operator (as the operator's ServiceAccount, like the shared one) so that it
can kill and restart it. The kill schedule is drawn from a seed printed at the start and named in
every failure; set SCALEML_FAULT_SEED to replay one.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import kopf
import pytest

from scaleml_operator.builders.modeldeployment import deployment_name
from tests.support.controlplane import ControlPlane
from tests.support.faults import (
    OPERATOR_ACCOUNT,
    KillSchedule,
    RestartableOperator,
    Snapshot,
    converged,
    create,
    create_paced,
    mixed,
    revoked,
)
from tests.support.kubectl import Kubectl
from tests.support.manifests import Manifest
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

KILLS = 3
# Seconds from the first object created within which the kills fall: the objects arrive (in batches,
# for about as long) and are reconciled meanwhile.
KILL_WINDOW = 15.0


@pytest.fixture
def fault_operator(cluster: ControlPlane, scaleml_installed: Kubectl, tmp_path: Path) -> Iterator[RestartableOperator]:
    """This test's own operator, started; ended after the test, however it ended."""
    kubeconfig = cluster.kubeconfig_for_token(cluster.request_token(*OPERATOR_ACCOUNT), name="fault-operator")
    process = RestartableOperator(kubeconfig, tmp_path)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def fault_namespace(claims_namespace: str, kubectl: Kubectl) -> Iterator[str]:
    """The test's namespace with the examples' claims; its ScaleML objects go at the end, before the
    namespace does, so that the next test's operator does not start by reconciling them."""
    yield claims_namespace
    for plural in ("trainingjobs", "modeldeployments", "driftmonitors"):
        # One request per kind (kubectl delete --all sends one per object).
        kubectl.run("delete", "--raw", f"/apis/scaleml.dev/v1alpha1/namespaces/{claims_namespace}/{plural}")


def _names(objects: list[Manifest]) -> list[str]:
    return [str(item["metadata"]["name"]) for item in objects]


def _assert_one_of_each_and_no_orphan(snapshot: Snapshot) -> None:
    assert not snapshot.duplicates(), f"duplicates: {snapshot.duplicates()}"
    assert not snapshot.orphans(), f"orphans: {snapshot.orphans()}"


def _converged_first(kubectl: Kubectl, namespace: str, objects: list[Manifest]) -> list[Manifest]:
    """`objects` created, once they converged: the state a fault then strikes."""
    create(kubectl, namespace, objects)
    converged(kubectl, namespace, _names(objects), 60)
    return objects


def _phase(began: float, what: str) -> None:
    print(f"{time.monotonic() - began:6.1f} s  {what}")


def test_killed_at_random_moments_the_operator_converges_every_object_once(
    kubectl: Kubectl, fault_namespace: str, fault_operator: RestartableOperator
) -> None:
    seed = int(os.environ.get("SCALEML_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    objects = mixed("k", training_jobs=65, model_deployments=30, drift_monitors=5)
    schedule = KillSchedule(fault_operator, seed, KILLS, KILL_WINDOW)
    plan = f"seed {seed}: SIGKILL at {schedule.offsets} s"
    print(plan)
    began = time.monotonic()

    with fault_operator.explained(plan):
        schedule.start()
        try:
            create_paced(kubectl, fault_namespace, objects, batch=5, pause=0.3)
        finally:
            schedule.join(timeout=120)
        _phase(began, f"created, killed at {schedule.done} s")
        snapshot = converged(kubectl, fault_namespace, _names(objects), 150)
        _phase(began, "converged")
        _assert_one_of_each_and_no_orphan(snapshot)


def test_after_an_api_server_restart_new_objects_converge_and_a_deleted_child_comes_back(
    cluster: ControlPlane, kubectl: Kubectl, fault_namespace: str, fault_operator: RestartableOperator
) -> None:
    began = time.monotonic()
    before = _converged_first(
        kubectl, fault_namespace, mixed("old", training_jobs=4, model_deployments=3, drift_monitors=1)
    )
    _phase(began, "converged before")

    cluster.restart_api()
    _phase(began, "restarted")

    after = mixed("new", training_jobs=4, model_deployments=3, drift_monitors=1)
    create(kubectl, fault_namespace, after)
    # A child made before the restart, deleted after it: only a watch that reconnected sees it go.
    # (In the foreground: its ReplicaSet goes first, so that no orphan is left for the checks below.)
    child = deployment_name("old-md-1")
    uid = kubectl.get("deployment", child, fault_namespace)["metadata"]["uid"]
    kubectl.run("delete", "deployment", child, "-n", fault_namespace, "--cascade=foreground")

    def recreated() -> bool:
        found = kubectl.find("deployment", child, fault_namespace)
        return found is not None and found["metadata"]["uid"] != uid

    with fault_operator.explained():
        # The reconnected watch brings it back in a second or two; a periodic resync would take longer.
        wait_for(recreated, 30, f"Deployment {child} to be recreated")
        _phase(began, "recreated")
        snapshot = converged(kubectl, fault_namespace, _names(before + after), 60)
        _phase(began, "converged after")
        _assert_one_of_each_and_no_orphan(snapshot)
        assert fault_operator.exit_code() is None, "the operator exited"


def test_with_its_rights_revoked_the_operator_exits_non_zero_and_a_restart_recovers(
    cluster: ControlPlane, kubectl: Kubectl, fault_namespace: str, fault_operator: RestartableOperator
) -> None:
    """Never deaf: a watch that reconnects into a 403 ends the process (its Deployment restarts it)."""
    began = time.monotonic()
    before = _converged_first(
        kubectl, fault_namespace, mixed("old", training_jobs=2, model_deployments=2, drift_monitors=0)
    )

    with fault_operator.explained(), revoked(kubectl, "scaleml-operator"):
        # A watch is authorised when it starts: the restart makes every watch start again, refused.
        cluster.restart_api()
        _phase(began, "revoked and restarted")
        # kopf retries a refused watch through its error back-offs (54 s by default) before its task ends.
        backoffs = kopf.OperatorSettings().networking.error_backoffs
        assert isinstance(backoffs, Iterable), "the operator keeps kopf's finite list of back-offs"
        gives_up = sum(backoffs)
        wait_for(lambda: fault_operator.exit_code() is not None, gives_up + 30, "the operator to exit")
        _phase(began, f"exited with {fault_operator.exit_code()}")
        assert fault_operator.exit_code() == 1
        # Why, for `kubectl logs --previous`: kopf's error names the refused watch.
        assert "cannot watch resource" in fault_operator.output()
    _phase(began, "restored")

    # What the Deployment does: start it again, into its restored rights.
    fault_operator.start()
    after = mixed("new", training_jobs=2, model_deployments=2, drift_monitors=1)
    create(kubectl, fault_namespace, after)
    with fault_operator.explained():
        snapshot = converged(kubectl, fault_namespace, _names(before + after), 90)
        _phase(began, "converged after")
        _assert_one_of_each_and_no_orphan(snapshot)
