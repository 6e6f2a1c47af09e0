"""`scaleml operator` as its own ServiceAccount, with the install manifests' RBAC: what runs in a cluster."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from scaleml_operator.handlers.background import RELEASE_CHECK_SECONDS, REPLACING
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.manifests import CRDS, example, load_all, merged
from tests.support.operator_process import OperatorProcess
from tests.support.polling import wait_for

pytestmark = pytest.mark.apiserver

SERVICE_ACCOUNT = "system:serviceaccount:scaleml-system:scaleml-operator"
StartOperator = Callable[..., OperatorProcess]


@pytest.fixture
def operator_kubeconfig(control_plane: ControlPlane, scaleml_installed: Kubectl) -> Path:
    """A kubeconfig holding a token of the operator's ServiceAccount from manifests/."""
    token = control_plane.request_token("scaleml-system", "scaleml-operator")
    return control_plane.kubeconfig_for_token(token, name="scaleml-operator")


@pytest.fixture
def start_operator(operator_kubeconfig: Path, tmp_path: Path) -> Iterator[StartOperator]:
    started: list[OperatorProcess] = []

    def start(*args: str) -> OperatorProcess:
        process = OperatorProcess(operator_kubeconfig, tmp_path / f"operator-{len(started)}.log", *args)
        started.append(process)
        process.wait_alive()
        return process

    yield start
    for process in started:
        process.stop()


def _accepted(kubectl: Kubectl, resource: str, name: str, namespace: str) -> bool:
    conditions = kubectl.get(resource, name, namespace).get("status", {}).get("conditions", [])
    return any(c["type"] == "Accepted" and c["status"] == "True" for c in conditions)


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` that carry `labels` (and any others)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def test_operator_works_with_only_its_own_rbac(
    start_operator: StartOperator, scaleml_installed: Kubectl, namespace: str
) -> None:
    operator = start_operator("--priority=100")
    for kind in ("TrainingJob", "ModelDeployment", "DriftMonitor"):
        scaleml_installed.apply(example(kind), "-n", namespace)
    for resource in ("trainingjob", "modeldeployment", "driftmonitor"):
        wait_for(partial(_accepted, scaleml_installed, resource, "churn", namespace), 30, f"{resource} accepted")

    def metrics_with_monitor() -> str | None:
        metrics = operator.metrics()
        return metrics if _sample(metrics, "scaleml_operator_objects", kind="DriftMonitor", phase="Unknown") else None

    metrics = wait_for(metrics_with_monitor, timeout=10, message="the objects metric")
    assert (
        _sample(metrics, "scaleml_operator_handler_duration_seconds_count", kind="TrainingJob", handler="reconcile")
        >= 1
    )
    # Pending, or already Running where the control plane has nodes (after the e2e tier in the same session).
    assert _sample(metrics, "scaleml_operator_objects", kind="TrainingJob") >= 1
    # A spec change made while it watches is a reaction, timed (objects it first saw in its initial
    # listing, had it not been watching yet when they were applied, are resumed, not timed).
    scaleml_installed.run(
        "patch", "modeldeployment", "churn", "-n", namespace, "--type=merge", "-p", '{"spec":{"replicas":2}}'
    )
    wait_for(
        lambda: _sample(operator.metrics(), "scaleml_operator_reaction_lag_seconds_count", kind="ModelDeployment"),
        timeout=30,
        message="the reaction to the change timed",
    )
    assert f'User "{SERVICE_ACCOUNT}" cannot' not in operator.output()


def test_replicas_peer_and_the_standby_takes_over(
    start_operator: StartOperator, scaleml_installed: Kubectl, namespace: str
) -> None:
    # kopf starts paused until it has read the peering object; only the higher priority resumes.
    active = start_operator("--priority=200")
    wait_for(lambda: "Resuming operations" in active.output(), 30, "the active replica to start handling")
    standby = start_operator("--priority=100")

    scaleml_installed.apply(example("DriftMonitor"), "-n", namespace)
    wait_for(lambda: _accepted(scaleml_installed, "driftmonitor", "churn", namespace), 30, "accepted by the active one")
    assert _sample(standby.metrics(), "scaleml_operator_handler_duration_seconds_count", kind="DriftMonitor") == 0
    assert "Resuming operations" not in standby.output()

    assert active.stop() == 0
    wait_for(lambda: "Resuming operations" in standby.output(), 90, "the standby to take over")
    scaleml_installed.apply(example("ModelDeployment"), "-n", namespace)
    wait_for(lambda: _accepted(scaleml_installed, "modeldeployment", "churn", namespace), 30, "accepted by the standby")


def test_a_process_left_large_by_deleted_objects_replaces_itself_and_serves_on(
    start_operator: StartOperator, scaleml_installed: Kubectl, namespace: str
) -> None:
    """After its objects are gone, a process grown past --recycle-above-mib execs itself afresh (same pid)."""
    # Any growth at all is above 1 MiB: the first reconcile alone loads the API client's models. The
    # test's namespace only: other tests' objects would be most of what its caches hold, and stay.
    operator = start_operator("--standalone", "--recycle-above-mib=1", f"--namespace={namespace}")
    first = merged(example("TrainingJob"), {"metadata": {"name": "before"}})
    scaleml_installed.apply(first, "-n", namespace)
    wait_for(partial(_accepted, scaleml_installed, "trainingjob", "before", namespace), 30, "the first accepted")
    # The operator counts what its caches hold every RELEASE_CHECK_SECONDS: a wave it never saw is none.
    time.sleep(2 * RELEASE_CHECK_SECONDS)
    scaleml_installed.run("delete", "trainingjob", "before", "-n", namespace, "--wait=true")
    # This tier runs no garbage collector: the Job goes by hand, as it would after its owner.
    scaleml_installed.run("delete", "jobs", "--all", "-n", namespace, "--wait=true")

    wait_for(lambda: REPLACING in operator.output(), 60, "the operator replacing its process")
    assert operator.process.poll() is None, operator.output()
    operator.wait_alive()
    second = merged(example("TrainingJob"), {"metadata": {"name": "after"}})
    scaleml_installed.apply(second, "-n", namespace)
    wait_for(partial(_accepted, scaleml_installed, "trainingjob", "after", namespace), 30, "the second accepted")
    # The new process ran its start-up, and logged on to the same stream.
    assert operator.output().count("Activity 'start_workers' succeeded") == 2, operator.output()


# model.params as the CRD had it before its values were bounded: free-form, so as deep as the API
# server stores anything (10,000 levels).
_FREE_FORM = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
DEEP = 9_990


@contextlib.contextmanager
def _params_free_form(kubectl: Kubectl) -> Iterator[None]:
    """The TrainingJob CRD with model.params free-form, as an older release installed it, while in use.

    Both applied server-side as the install is (same field manager), so the install's own fields stay its own.
    """
    (bounded,) = load_all(CRDS / "trainingjobs.scaleml.dev.yaml")
    loose = copy.deepcopy(bounded)
    loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["model"][
        "properties"
    ]["params"] = _FREE_FORM
    kubectl.apply(loose, "--server-side", "--force-conflicts")
    try:
        yield
    finally:
        kubectl.apply(bounded, "--server-side", "--force-conflicts")


def _deep_job(name: str) -> str:
    """A TrainingJob whose model.params.extra is nested DEEP levels, as JSON (Python could not dump it)."""
    job = merged(example("TrainingJob"), {"metadata": {"name": name}})
    job["spec"]["model"]["params"]["extra"] = "@@"
    return json.dumps(job).replace('"@@"', '{"a":' * DEEP + "1" + "}" * DEEP)


def _accepted_condition(kubectl: Kubectl, name: str, namespace: str) -> dict[str, str] | None:
    # Its status only: the object itself is too deep for json (and kubectl) to decode.
    jsonpath = "-o=jsonpath={.status.conditions[?(@.type=='Accepted')]}"
    out = kubectl.run("get", "trainingjob", name, "-n", namespace, jsonpath).stdout
    return json.loads(out) if out else None


def test_an_object_nested_too_deep_for_json_is_reported_and_the_operator_serves_on(
    start_operator: StartOperator, scaleml_installed: Kubectl, namespace: str
) -> None:
    """One tenant's object nested 9,990 levels deep, stored before the schema bounded model.params, neither
    stops the operator's watch (it used to end, and the operator with it, on every restart) nor others' objects."""
    kubectl = scaleml_installed
    operator = start_operator("--standalone", f"--namespace={namespace}")
    try:
        with _params_free_form(kubectl):
            # The API server takes the looser schema a moment after the CRD changes.
            wait_for(
                lambda: (
                    kubectl.run("create", "-n", namespace, "-f", "-", stdin=_deep_job("deep"), check=False).returncode
                    == 0
                ),
                30,
                "the deep TrainingJob stored",
            )

        # Seen on the operator's watch: read, and refused as any invalid spec is, naming the field.
        accepted = wait_for(lambda: _accepted_condition(kubectl, "deep", namespace), 30, "the deep job's Accepted")
        assert (accepted["status"], accepted["reason"]) == ("False", "InvalidSpec"), accepted
        assert "spec.model.params.extra" in accepted["message"], accepted
        kubectl.await_event_reasons(namespace, "TrainingJob", {"InvalidSpec"})
        kubectl.apply(merged(example("TrainingJob"), {"metadata": {"name": "next"}}), "-n", namespace)
        wait_for(partial(_accepted, kubectl, "trainingjob", "next", namespace), 30, "the next job accepted")

        # Read again in a new operator's first listing, where the old one stopped on every restart.
        assert operator.stop() == 0, operator.output()
        restarted = start_operator("--standalone", f"--namespace={namespace}")
        kubectl.apply(merged(example("TrainingJob"), {"metadata": {"name": "after"}}), "-n", namespace)
        wait_for(partial(_accepted, kubectl, "trainingjob", "after", namespace), 30, "a job accepted after a restart")
        assert restarted.process.poll() is None, restarted.output()
        assert "RecursionError" not in operator.output() + restarted.output()
    finally:
        # Nothing else in the session has to read it.
        kubectl.run("delete", "trainingjob", "deep", "-n", namespace, "--ignore-not-found")
