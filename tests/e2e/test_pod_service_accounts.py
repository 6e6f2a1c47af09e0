"""The optional policy of components/pod-service-accounts: only ScaleML's own pods run as its pods' ServiceAccounts.

Without it, a user who may create pods in a namespace runs one as `NAME-monitor` or `NAME-trainer` and
writes that object's status. With it, the Job and ReplicaSet controllers still make ScaleML's pods
(this control plane runs them as their own ServiceAccounts, as kubeadm does), and the user's pod,
Deployment, Job, token Secret, token request and ephemeral container are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.scenario import condition, export, model_deployment, status, training_job
from tests.support.kubectl import Kubectl
from tests.support.kustomize import COMPONENTS, build, overlay
from tests.support.manifests import example, merged
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

TENANT = "pod-maker"
# What Pod Security "restricted" asks of every container, so that only the policy under test refuses.
RESTRICTED_CONTAINER = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
}


def _pod_spec(account: str) -> dict[str, Any]:
    container = {"name": "c", "image": "registry.example/tools:1", "command": ["sleep", "3600"], **RESTRICTED_CONTAINER}
    return {"serviceAccountName": account, "containers": [container]}


def _template(account: str, restart: str = "Always") -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "forger"}}, "spec": {**_pod_spec(account), "restartPolicy": restart}}


@pytest.fixture
def policy(kubectl: Kubectl, tmp_path: Path) -> Iterator[None]:
    objects = build(overlay(tmp_path / "cluster", [], [COMPONENTS / "pod-service-accounts"]))
    listed = {"apiVersion": "v1", "kind": "List", "items": objects}
    kubectl.apply(listed)
    try:
        yield
    finally:
        kubectl.run("delete", "-f", "-", "--ignore-not-found", stdin=json.dumps(listed))


def _as_tenant(kubectl: Kubectl, namespace: str, *args: str, stdin: str | None = None) -> tuple[bool, str]:
    """Whether the tenant's request went through (server-side dry run where it can be), and what the server said."""
    result = kubectl.run(*args, "-n", namespace, f"--as={TENANT}", stdin=stdin, check=False)
    return result.returncode == 0, result.stderr


def _create(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> tuple[bool, str]:
    return _as_tenant(kubectl, namespace, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest))


def test_only_scaleml_runs_pods_as_its_pods_service_accounts(kubectl: Kubectl, ml_namespace: str, policy: None) -> None:
    namespace = ml_namespace
    kubectl.run(
        "create",
        "role",
        "pod-maker",
        "-n",
        namespace,
        "--verb=*",
        "--resource=pods,pods/ephemeralcontainers,deployments,jobs,secrets",
    )
    kubectl.run("create", "role", "token-maker", "-n", namespace, "--verb=create", "--resource=serviceaccounts/token")
    for role in ("pod-maker", "token-maker"):
        kubectl.run("create", "rolebinding", role, "-n", namespace, f"--role={role}", f"--user={TENANT}")
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "forger"}, "spec": _pod_spec("churn-monitor")}
    # The policy is in force once the API server refuses what it refuses (it loads policies in the background).
    wait_for(lambda: not _create(kubectl, namespace, bare)[0], 30, "the policy in force")

    # ScaleML's own pods: a DriftMonitor's monitor (Deployment, ReplicaSet, pod) and a TrainingJob's workers.
    training_job(kubectl, namespace)
    export(kubectl, namespace, 1)
    kubectl.apply(model_deployment(autoscaling=None), "-n", namespace)
    kubectl.apply(example("DriftMonitor"), "-n", namespace)
    wait_for(
        lambda: condition(status(kubectl, "driftmonitor", "churn", namespace), "Ready").get("status") == "True",
        90,
        "the monitor's pod",
    )
    training_job(kubectl, namespace, name="digits", runPolicy={"suspend": False})
    wait_for(lambda: status(kubectl, "trainingjob", "digits", namespace).get("phase") == "Succeeded", 120, "digits")

    # The tenant's own pods run as other accounts...
    allowed, said = _create(kubectl, namespace, merged(bare, {"spec": {"serviceAccountName": "default"}}))
    assert allowed, said
    # ... and never as ScaleML's, whichever kind makes them.
    refused, said = _create(kubectl, namespace, bare)
    assert not refused
    assert "only ScaleML runs pods as churn-monitor" in said
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "forger"},
        "spec": {"selector": {"matchLabels": {"app": "forger"}}, "template": _template("churn-trainer")},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "forger"},
        "spec": {"template": _template("digits-trainer", restart="Never")},
    }
    for manifest in (deployment, job):
        refused, said = _create(kubectl, namespace, manifest)
        assert not refused
        assert f"a {manifest['kind']} takes on a *-trainer or *-monitor ServiceAccount only from" in said
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "forger", "annotations": {"kubernetes.io/service-account.name": "churn-monitor"}},
        "type": "kubernetes.io/service-account-token",
    }
    refused, said = _create(kubectl, namespace, secret)
    assert not refused
    assert "no Secret holds a token for churn-monitor" in said
    refused, said = _as_tenant(kubectl, namespace, "create", "token", "churn-monitor")
    assert not refused
    assert "only a node requests a token for churn-monitor" in said
    (pod,) = json.loads(
        kubectl.run("get", "pods", "-n", namespace, "-l", "scaleml.dev/driftmonitor=churn", "-o", "json").stdout
    )["items"]
    debugger = {"name": "debugger", "image": "registry.example/tools:1", **RESTRICTED_CONTAINER}
    refused, said = _as_tenant(
        kubectl,
        namespace,
        "patch",
        "pod",
        pod["metadata"]["name"],
        "--subresource=ephemeralcontainers",
        "--type=strategic",
        "--dry-run=server",
        "-p",
        json.dumps({"spec": {"ephemeralContainers": [debugger]}}),
    )
    assert not refused
    assert "no ephemeral container joins a pod that runs as churn-monitor" in said
