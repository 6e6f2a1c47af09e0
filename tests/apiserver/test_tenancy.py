"""Least reach for the operator, against the real API server: the namespace-scoped install confines it to the
namespaces it serves, the ValidatingAdmissionPolicy holds its writes to the objects it makes, and the
NetworkPolicies apply. (tests/unit/test_network_policies.py reads what the policies let through.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec, RetrainPolicy
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import driftmonitor, modeldeployment, retraining, trainingjob
from scaleml_operator.builders.meta import Owner
from tests.support.access import Case, wrong_answers
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.kustomize import COMPONENTS, MANIFESTS, OVERLAYS, build, overlay
from tests.support.manifests import Manifest, example, merged
from tests.support.operator_process import OperatorProcess
from tests.support.polling import wait_for

pytestmark = pytest.mark.apiserver

NAMESPACE = "scaleml-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:scaleml-operator"
SERVED = "scaleml-workloads"
REFUSED = "ValidatingAdmissionPolicy 'scaleml-operator' with binding 'scaleml-operator' denied request"
MANAGED = {"app.kubernetes.io/managed-by": "scaleml-operator"}


def _as_operator(kubectl: Kubectl, *args: str, manifest: Manifest | None = None) -> subprocess.CompletedProcess[str]:
    stdin = json.dumps(manifest) if manifest is not None else None
    return kubectl.run(*args, f"--as={OPERATOR}", stdin=stdin, check=False)


def _apply_as_operator(kubectl: Kubectl, manifest: Manifest, *flags: str) -> subprocess.CompletedProcess[str]:
    """What the operator does with each child: server-side apply, forced, as its field manager."""
    return _as_operator(
        kubectl,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=scaleml-operator",
        *flags,
        "-f",
        "-",
        manifest=manifest,
    )


# -------------------------------------------------------------------------------------------------------
# The ValidatingAdmissionPolicy (installed with the base)
# -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy_in_force(scaleml_installed: Kubectl) -> Kubectl:
    """The policy, once the API server enforces it (it loads policies a moment after they are written)."""
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "probe", "namespace": "kube-system", "labels": MANAGED},
    }

    def refused() -> bool:
        return (
            REFUSED in _as_operator(scaleml_installed, "create", "--dry-run=server", "-f", "-", manifest=account).stderr
        )

    wait_for(refused, 30, "the admission policy to be enforced")
    return scaleml_installed


def _children(namespace: str) -> list[Manifest]:
    """Every kind of child the operator makes, from its builders: capture, autoscaling and a budget on."""
    job = TrainingJobSpec.model_validate(example("TrainingJob")["spec"])
    served = {"autoscaling": {"minReplicas": 2}, "capture": {"enabled": True}}
    deployment = ModelDeploymentSpec.model_validate(merged(example("ModelDeployment"), {"spec": served})["spec"])
    monitor = DriftMonitorSpec.model_validate(example("DriftMonitor")["spec"])
    children = [
        *trainingjob.children(Owner("TrainingJob", "churn", namespace, "uid-1"), job, "img").apply,
        *modeldeployment.children(
            Owner("ModelDeployment", "churn", namespace, "uid-2"),
            deployment,
            modeldeployment.ModelSource("models", "churn", 1),
            ("triton", "img"),
        ).apply,
        *driftmonitor.children(
            Owner("DriftMonitor", "churn", namespace, "uid-3"),
            monitor,
            driftmonitor.Inputs("captures", "models", "churn/1/profile.json", 1, "churn"),
            "img",
        ).apply,
    ]
    assert {c["kind"] for c in children} >= {
        "ServiceAccount",
        "RoleBinding",
        "Service",
        "Job",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    return children


def _training_job(namespace: str, name: str = "churn", **changes: Any) -> Manifest:
    return merged(example("TrainingJob"), {"metadata": {"name": name, "namespace": namespace}, "spec": changes})


def _event(namespace: str, involved: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "scaleml-", "namespace": namespace},
        "involvedObject": {**involved, "namespace": namespace},
        "reason": "SpecAccepted",
        "message": "accepted",
        "type": "Normal",
    }


def test_the_operator_writes_what_it_makes_and_what_it_keeps(policy_in_force: Kubectl, namespace: str) -> None:
    kubectl = policy_in_force
    # Its children, created and then updated (a second apply), as every reconcile does.
    for attempt in ("create", "update"):
        for child in _children(namespace):
            result = _apply_as_operator(kubectl, child)
            assert result.returncode == 0, f"{attempt} {child['kind']} {child['metadata']['name']}: {result.stderr}"
    # An autoscaler and a budget no longer wanted go.
    for resource in ("horizontalpodautoscaler", "poddisruptionbudget"):
        result = _as_operator(kubectl, "delete", resource, "churn", "-n", namespace)
        assert result.returncode == 0, result.stderr

    # The users' objects: their status, Events about them.
    kubectl.apply(_training_job(namespace))
    status = ["--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Pending"}}']
    result = _as_operator(kubectl, "patch", "trainingjob", "churn", *status, "-n", namespace)
    assert result.returncode == 0, result.stderr
    event = _event(namespace, {"apiVersion": "scaleml.dev/v1alpha1", "kind": "TrainingJob", "name": "churn"})
    assert _as_operator(kubectl, "create", "-f", "-", manifest=event).returncode == 0

    # A DriftMonitor's retraining TrainingJob, made by the builder the operator uses.
    source = kubectl.get("trainingjob", "churn", namespace)
    retrain = retraining.retraining_job(
        source, RetrainPolicy(enabled=True), name="churn-retrain-1", monitor="churn", drift_since="2026-01-01T00:00:00Z"
    )
    result = _as_operator(kubectl, "create", "-f", "-", manifest=retrain)
    assert result.returncode == 0, result.stderr
    # A finished TrainingJob whose time to live ran out (the example sets ttlSecondsAfterFinished).
    assert _as_operator(kubectl, "delete", "trainingjob", "churn", "-n", namespace, "--wait=false").returncode == 0


def _labelled(manifest: Manifest) -> Manifest:
    return merged(manifest, {"metadata": {"labels": MANAGED}})


def _child(namespace: str, kind: str, name: str = "", **changes: Any) -> Manifest:
    found = next(c for c in _children(namespace) if c["kind"] == kind and (not name or c["metadata"]["name"] == name))
    return merged(found, changes)


def _refusals(namespace: str) -> list[tuple[str, list[str], Manifest | None]]:
    """(what, kubectl arguments, manifest on stdin) the operator's account must be refused by the policy."""
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x", "namespace": namespace}}
    create = ["create", "--dry-run=server", "-f", "-"]
    apply = ["apply", "--server-side", "--force-conflicts", "--field-manager=scaleml-operator", "--dry-run=server"]
    pod_spec: Manifest = {"spec": {"template": {"spec": {}}}}

    def job(**spec: Any) -> Manifest:
        # Another Job of the same TrainingJob: a live Job's template is immutable, which would refuse first.
        changes = merged(pod_spec, {"metadata": {"name": "other"}, "spec": {"template": {"spec": spec}}})
        return _child(namespace, "Job", **changes)

    def another_binding(**changes: Any) -> Manifest:
        # A new one, created: a live RoleBinding's roleRef is immutable, which would refuse first.
        return _child(namespace, "RoleBinding", "churn-trainer-status", metadata={"name": "other"}, **changes)

    trainer = _child(namespace, "ServiceAccount")["metadata"]
    volumes = _child(namespace, "Job")["spec"]["template"]["spec"]["volumes"]
    host_path = [*volumes, {"name": "host", "hostPath": {"path": "/"}}]
    other_config = [*volumes, {"name": "settings", "configMap": {"name": "tenant-settings"}}]
    return [
        (
            "a labelled object in kube-system",
            create,
            _labelled(merged(account, {"metadata": {"namespace": "kube-system"}})),
        ),
        ("an unlabelled object", create, account),
        (
            "taking over the tenant's unlabelled ServiceAccount",
            [*apply, "-f", "-"],
            _labelled(merged(account, {"metadata": {"name": "tenant"}})),
        ),
        (
            "taking over another ScaleML object's child",
            [*apply, "-f", "-"],
            _child(
                namespace,
                "ServiceAccount",
                metadata={"ownerReferences": [{**trainer["ownerReferences"][0], "uid": "uid-9"}]},
            ),
        ),
        (
            "adopting an object labelled as the operator's that no ScaleML object controls",
            [*apply, "-f", "-"],
            _labelled(merged(account, {"metadata": {"name": "posing", "ownerReferences": trainer["ownerReferences"]}})),
        ),
        ("a Job running as another ServiceAccount", [*apply, "-f", "-"], job(serviceAccountName="default")),
        ("a Job mounting a hostPath", [*apply, "-f", "-"], job(volumes=host_path)),
        ("a Job on the host network", [*apply, "-f", "-"], job(hostNetwork=True)),
        ("a Job mounting another ConfigMap", [*apply, "-f", "-"], job(volumes=other_config)),
        (
            "Triton with a token",
            [*apply, "-f", "-"],
            _child(
                namespace,
                "Deployment",
                "churn-triton",
                spec={"template": {"spec": {"automountServiceAccountToken": True}}},
            ),
        ),
        (
            "a RoleBinding to another ServiceAccount",
            [*apply, "-f", "-"],
            _child(
                namespace,
                "RoleBinding",
                "churn-trainer-status",
                subjects=[{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
            ),
        ),
        (
            "a RoleBinding to a ServiceAccount of another namespace",
            create,
            another_binding(subjects=[{"kind": "ServiceAccount", "name": "churn-trainer", "namespace": "kube-system"}]),
        ),
        (
            "binding the monitor's ClusterRole to a TrainingJob's workers",
            create,
            another_binding(roleRef={"name": driftmonitor.STATUS_ROLE}),
        ),
        (
            "a NodePort Service",
            create,
            merged(
                _child(namespace, "Service", "churn"), {"metadata": {"name": "exposed"}, "spec": {"type": "NodePort"}}
            ),
        ),
        ("a TrainingJob not made by retraining", create, _training_job(namespace, "fresh")),
        (
            "changing a TrainingJob's spec",
            [
                "patch",
                "trainingjob",
                "churn",
                "-n",
                namespace,
                "--dry-run=server",
                "--type=merge",
                "-p",
                '{"spec":{"runPolicy":{"suspend":true}}}',
            ],
            None,
        ),
        (
            "changing a TrainingJob's labels",
            ["label", "trainingjob", "churn", "-n", namespace, "--dry-run=server", "team=x"],
            None,
        ),
        (
            "an annotation, even under the operator's own prefix",
            ["annotate", "trainingjob", "churn", "-n", namespace, "--dry-run=server", "scaleml.dev/x=y"],
            None,
        ),
        (
            "deleting a TrainingJob without a time to live",
            ["delete", "trainingjob", "kept", "-n", namespace, "--dry-run=server"],
            None,
        ),
        ("an Event about a Pod", create, _event(namespace, {"apiVersion": "v1", "kind": "Pod", "name": "p"})),
    ]


def test_the_operator_writes_nothing_it_did_not_make(policy_in_force: Kubectl, namespace: str) -> None:
    kubectl = policy_in_force
    # What the tenant made: an account of its own, two TrainingJobs (one to be kept), the operator's children.
    kubectl.run("create", "serviceaccount", "tenant", "-n", namespace)
    kubectl.run("create", "serviceaccount", "posing", "-n", namespace)
    kubectl.run("label", "serviceaccount", "posing", "-n", namespace, "app.kubernetes.io/managed-by=scaleml-operator")
    kubectl.apply(_training_job(namespace))
    kubectl.apply(_training_job(namespace, "kept", runPolicy={"ttlSecondsAfterFinished": None}))
    for child in _children(namespace):
        assert _apply_as_operator(kubectl, child).returncode == 0
    # Its RBAC lets it write no TrainingJob but through the status; granted more, the policy still holds.
    operator = f"--serviceaccount={NAMESPACE}:{OPERATOR.rsplit(':', 1)[1]}"
    kubectl.run("create", "role", "more", "--verb=patch", "--resource=trainingjobs.scaleml.dev", "-n", namespace)
    kubectl.run("create", "rolebinding", "more", "--role=more", operator, "-n", namespace)

    def refusal(case: tuple[str, list[str], Manifest | None]) -> str:
        what, args, manifest = case
        result = _as_operator(kubectl, *args, manifest=manifest)
        return "" if REFUSED in result.stderr else f"{what}: {result.returncode} {result.stdout}{result.stderr}"

    cases = _refusals(namespace)
    with ThreadPoolExecutor(4) as pool:
        wrong = [answer for answer in pool.map(refusal, cases) if answer]
    assert wrong == []
    # The policy is the operator's alone: the admin writes the same unlabelled object, in kube-system too.
    for _, args, manifest in cases[:2]:
        assert kubectl.run(*args, stdin=json.dumps(manifest)).returncode == 0


def _patch_status(kubectl: Kubectl, resource: str, name: str, namespace: str, account: str | None) -> str:
    """Why the ServiceAccount `account` of the namespace (None: the admin) may not patch the object's status;
    empty when it may. A dry run: nothing is written."""
    identity = [f"--as=system:serviceaccount:{namespace}:{account}"] if account else []
    patch = ["--subresource=status", "--type=merge", "--dry-run=server", "-p", '{"status":{"phase":"Running"}}']
    result = kubectl.run("patch", resource, name, "-n", namespace, *patch, *identity, check=False)
    return "" if result.returncode == 0 else result.stderr


def test_a_pods_service_account_writes_the_status_of_its_own_object_only(
    policy_in_force: Kubectl, namespace: str
) -> None:
    """The pods' ClusterRoles grant every status of the kind in the namespace; the policy scaleml-pods narrows them."""
    kubectl = policy_in_force
    for name in ("churn", "other"):
        kubectl.apply(_training_job(namespace, name))
        kubectl.apply(merged(example("DriftMonitor"), {"metadata": {"name": name, "namespace": namespace}}))
    # What the operator binds for the TrainingJob and the DriftMonitor "churn" (the builders' own objects).
    for child in _children(namespace):
        if child["kind"] == "RoleBinding":
            assert _apply_as_operator(kubectl, child).returncode == 0
    workers, monitor = "churn-trainer", "churn-monitor"

    def enforced() -> bool:
        # The API server loads a new policy, and RBAC sees a new binding, a moment after they are written.
        return _patch_status(kubectl, "trainingjob", "churn", namespace, workers) == "" and "its own" in _patch_status(
            kubectl, "trainingjob", "other", namespace, workers
        )

    wait_for(enforced, 30, "the pods' policy to be enforced")
    refused = _patch_status(kubectl, "trainingjob", "other", namespace, workers)
    assert f"system:serviceaccount:{namespace}:{workers} writes the status of its own TrainingJob only" in refused
    assert _patch_status(kubectl, "driftmonitor", "churn", namespace, monitor) == ""
    refused = _patch_status(kubectl, "driftmonitor", "other", namespace, monitor)
    assert f"{monitor} writes the status of its own DriftMonitor only" in refused, refused
    # Workers have no business with any DriftMonitor, nor a monitor with TrainingJobs: RBAC grants neither.
    assert "forbidden" in _patch_status(kubectl, "driftmonitor", "churn", namespace, workers)
    assert "forbidden" in _patch_status(kubectl, "trainingjob", "churn", namespace, monitor)
    # Users and their own accounts are none of the policy's business: the admin writes any status.
    assert _patch_status(kubectl, "trainingjob", "other", namespace, None) == ""


def _accepted(kubectl: Kubectl, name: str, namespace: str) -> bool:
    conditions = (kubectl.find("trainingjob", name, namespace) or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Accepted" and c["status"] == "True" for c in conditions)


def _rejected(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    conditions = (kubectl.find("trainingjob", "churn", namespace) or {}).get("status", {}).get("conditions", [])
    applied: dict[str, Any] = next((c for c in conditions if c["type"] == "SpecApplied"), {})
    return applied if applied.get("reason") == "ChildRejected" else None


def test_a_child_the_policy_refuses_is_reported_not_retried(
    control_plane: ControlPlane, policy_in_force: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """A tenant strips the operator's label off a child: the operator may no longer write it, and says so."""
    kubectl = policy_in_force
    token = control_plane.request_token(NAMESPACE, "scaleml-operator")
    operator = OperatorProcess(
        control_plane.kubeconfig_for_token(token, name="operator-refused"), tmp_path / "operator.log", "--standalone"
    )
    try:
        operator.wait_alive()
        kubectl.apply(_training_job(namespace))
        wait_for(partial(_accepted, kubectl, "churn", namespace), 60, "the TrainingJob accepted")
        # It relies on the policy: the children, new to it, were applied without being read first.
        assert "Admission policy scaleml-operator in force" in operator.output()
        kubectl.run("label", "serviceaccount", "churn-trainer", "-n", namespace, "app.kubernetes.io/managed-by-")
        kubectl.run(
            "patch",
            "trainingjob",
            "churn",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"hyperparameters":{"epochs":7}}}',
        )
        rejected = wait_for(partial(_rejected, kubectl, namespace), 60, "SpecApplied=False ChildRejected")
        assert rejected["message"].startswith("ServiceAccount churn-trainer"), rejected["message"]
        assert (
            "writes only /serviceaccounts labelled app.kubernetes.io/managed-by=scaleml-operator" in rejected["message"]
        )
        # Left as the tenant made it.
        labels = kubectl.get("serviceaccount", "churn-trainer", namespace)["metadata"].get("labels", {})
        assert "app.kubernetes.io/managed-by" not in labels
    finally:
        operator.stop()
    # Reported, not retried: kopf keeps no failed handler's state, and no refusal reached it as an error.
    annotations = kubectl.get("trainingjob", "churn", namespace)["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("scaleml.dev/reconcile")], annotations
    # The refusal is told once, as the Event's line; no other line (a traceback, a kopf error) repeats it.
    told = [line for line in operator.output().splitlines() if REFUSED in line]
    assert len(told) == 1, told
    assert "[scaleml_operator.kube.events]" in told[0], told


# -------------------------------------------------------------------------------------------------------
# The namespace-scoped install
# -------------------------------------------------------------------------------------------------------


@pytest.fixture
def namespaced_install(scaleml_installed: Kubectl) -> Iterator[Kubectl]:
    """manifests/overlays/namespaced applied over the base, as a switch from the cluster-wide install does it:
    server-side apply prunes nothing, so the cluster-wide grant goes by hand. The base comes back after."""
    kubectl = scaleml_installed
    kubectl.run("apply", "--server-side", "-k", str(OVERLAYS / "namespaced"))
    kubectl.run("delete", "clusterrolebinding,clusterrole", "scaleml-operator")
    yield kubectl
    kubectl.run("apply", "--server-side", "-k", str(MANIFESTS))
    kubectl.run("delete", "clusterrolebinding,clusterrole", "scaleml-operator-cluster", "--ignore-not-found")
    kubectl.run("delete", "namespace", SERVED, "--wait=false", "--ignore-not-found")


# (allowed, verb, resource, subresource, namespace or None for all namespaces, resource name)
NAMESPACED_CAN_I: list[Case] = [
    (True, "list", "jobs.batch", "", SERVED, ""),
    (True, "create", "jobs.batch", "", SERVED, ""),
    (True, "watch", "pods", "", SERVED, ""),
    (True, "patch", "trainingjobs.scaleml.dev", "status", SERVED, ""),
    (True, "create", "rolebindings.rbac.authorization.k8s.io", "", SERVED, ""),
    (True, "bind", "clusterroles.rbac.authorization.k8s.io", "", SERVED, "scaleml-trainer-status"),
    (True, "create", "events", "", SERVED, ""),
    (True, "list", "events", "", SERVED, ""),
    (True, "patch", "configmaps", "", SERVED, ""),
    # Listed (metadata, its own) to find those deleted by hand; never watched.
    (True, "list", "configmaps", "", SERVED, ""),
    (False, "watch", "configmaps", "", SERVED, ""),
    (False, "list", "configmaps", "", None, ""),
    (False, "list", "configmaps", "", "default", ""),
    # Another namespace, or all of them: nothing namespaced.
    (False, "list", "jobs.batch", "", None, ""),
    (False, "list", "jobs.batch", "", "default", ""),
    (False, "watch", "pods", "", None, ""),
    (False, "watch", "trainingjobs.scaleml.dev", "", None, ""),
    (False, "patch", "deployments.apps", "", "kube-system", ""),
    (False, "create", "events", "", "default", ""),
    (False, "list", "events", "", "default", ""),
    (False, "create", "rolebindings.rbac.authorization.k8s.io", "", "default", ""),
    (False, "bind", "clusterroles.rbac.authorization.k8s.io", "", "default", "scaleml-trainer-status"),
    # Its own namespace is not served either.
    (False, "create", "serviceaccounts", "", NAMESPACE, ""),
    # Still never: Secrets, pods of its own, escalation.
    (False, "get", "secrets", "", SERVED, ""),
    (False, "create", "pods", "", SERVED, ""),
    (False, "bind", "roles.rbac.authorization.k8s.io", "", SERVED, ""),
    (False, "create", "roles.rbac.authorization.k8s.io", "", SERVED, ""),
    (False, "bind", "clusterroles.rbac.authorization.k8s.io", "", SERVED, "admin"),
    # Cluster-scoped: its peering object (patched by name only), CRDs and namespaces read-only.
    (True, "watch", "clusterkopfpeerings.kopf.dev", "", None, ""),
    (True, "create", "clusterkopfpeerings.kopf.dev", "", None, ""),
    (True, "patch", "clusterkopfpeerings.kopf.dev", "", None, "scaleml"),
    (False, "patch", "clusterkopfpeerings.kopf.dev", "", None, "another-operator"),
    (False, "delete", "clusterkopfpeerings.kopf.dev", "", None, "scaleml"),
    (True, "watch", "customresourcedefinitions.apiextensions.k8s.io", "", None, ""),
    (False, "patch", "customresourcedefinitions.apiextensions.k8s.io", "", None, ""),
    (True, "list", "namespaces", "", None, ""),
    (False, "patch", "namespaces", "", None, SERVED),
]


def test_the_namespaced_install_confines_the_operator_to_the_namespaces_it_serves(namespaced_install: Kubectl) -> None:
    kubectl = namespaced_install
    args = kubectl.get("deployment", "scaleml-operator", NAMESPACE)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["operator", f"--namespace={SERVED}"]
    assert kubectl.get("role", "scaleml-operator", SERVED)
    assert len(json.loads(kubectl.run("get", "networkpolicies", "-n", SERVED, "-o", "json").stdout)["items"]) == 3

    assert wrong_answers(kubectl, OPERATOR, NAMESPACED_CAN_I) == []


def test_a_namespace_scoped_operator_serves_its_namespace_and_no_other(
    control_plane: ControlPlane, namespaced_install: Kubectl, make_namespace: Callable[..., str], tmp_path: Path
) -> None:
    kubectl = namespaced_install
    served, other = make_namespace(), make_namespace()
    # The served-namespace piece, under the test's namespace, as a platform team includes it.
    directory = overlay(tmp_path / "served", [OVERLAYS / "namespaced" / "served-namespace"])
    (directory / "kustomization.yaml").write_text(
        f"namespace: {served}\n" + (directory / "kustomization.yaml").read_text()
    )
    kubectl.run("apply", "--server-side", "-k", str(directory))
    token = control_plane.request_token(NAMESPACE, "scaleml-operator")
    operator = OperatorProcess(
        control_plane.kubeconfig_for_token(token, name="namespaced-operator"),
        tmp_path / "operator.log",
        # Peered, as installed (peering has a Role rule of its own); above any peer other tests leave.
        "--priority=1000",
        f"--namespace={served}",
    )
    try:
        operator.wait_alive()
        for namespace in (served, other):
            kubectl.apply(_training_job(namespace))
        wait_for(partial(_accepted, kubectl, "churn", served), 60, "the served namespace's TrainingJob accepted")
        assert kubectl.find("job", "churn", served) is not None
        # The other namespace's object stays untouched: no status, no children, no bookkeeping.
        untouched = kubectl.get("trainingjob", "churn", other)
        assert "status" not in untouched
        assert not any(k.startswith("scaleml.dev/") for k in untouched["metadata"].get("annotations", {}))
        assert kubectl.find("job", "churn", other) is None
    finally:
        operator.stop()
    log = operator.output()
    assert f'User "{OPERATOR}" cannot' not in log
    assert REFUSED not in log


# -------------------------------------------------------------------------------------------------------
# The NetworkPolicies
# -------------------------------------------------------------------------------------------------------


def test_the_network_policies_apply_server_side(scaleml_installed: Kubectl, namespace: str, tmp_path: Path) -> None:
    kubectl = scaleml_installed
    # The tenants' component, under a tenant's namespace.
    directory = overlay(tmp_path / "tenant", [], [COMPONENTS / "network-policies"])
    (directory / "kustomization.yaml").write_text(
        f"namespace: {namespace}\n" + (directory / "kustomization.yaml").read_text()
    )
    rendered = build(directory)
    assert {(m["kind"], m["metadata"]["namespace"]) for m in rendered} == {("NetworkPolicy", namespace)}
    applied = kubectl.run("apply", "--server-side", "--dry-run=server", "--validate=strict", "-k", str(directory))
    assert applied.stdout.count("serverside-applied (server dry run)") == len(rendered), applied.stdout
    # Production's, in the operator's namespace.
    production = [m for m in build(OVERLAYS / "production") if m["kind"] == "NetworkPolicy"]
    assert [m["metadata"]["namespace"] for m in production] == [NAMESPACE]
    kubectl.run(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        stdin=yaml.safe_dump_all(production),
    )
