"""The install manifests against the real API server: every overlay and component applies server-side, and
the operator's ServiceAccount can do what the operator needs and nothing it does not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from scaleml_operator.builders.meta import MANAGED_BY
from tests.support import tools
from tests.support.access import Case, wrong_answers
from tests.support.kubectl import Kubectl
from tests.support.kustomize import BASE, COMPONENTS, MANIFESTS, OVERLAYS, build, overlay

pytestmark = pytest.mark.apiserver

NAMESPACE = "scaleml-system"
OPERATOR = f"system:serviceaccount:{NAMESPACE}:scaleml-operator"


@pytest.fixture
def restore_base(scaleml_installed: Kubectl) -> Iterator[Kubectl]:
    """The session's other tests expect the base install: it is applied again, and the overlays' extras removed."""
    yield scaleml_installed
    scaleml_installed.run("apply", "--server-side", "-k", str(MANIFESTS))
    scaleml_installed.run(
        "delete", "poddisruptionbudget,networkpolicy", "scaleml-operator", "-n", NAMESPACE, "--ignore-not-found"
    )


@pytest.fixture(scope="module")
def prometheus_operator_crds(scaleml_installed: Kubectl) -> Kubectl:
    """The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule kinds, installed."""
    for crd in tools.prometheus_operator_crds():
        scaleml_installed.run("apply", "--server-side", "-f", str(crd))
    for kind in tools.PROMETHEUS_OPERATOR_KINDS:
        scaleml_installed.run(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{kind}.monitoring.coreos.com"
        )
    return scaleml_installed


def test_each_overlay_applies_server_side_and_switching_between_them_converges(restore_base: Kubectl) -> None:
    kubectl = restore_base
    for name, replicas, standalone in (("production", 2, False), ("development", 1, True), ("production", 2, False)):
        kubectl.run("apply", "--server-side", "-k", str(OVERLAYS / name))
        deployment = kubectl.get("deployment", "scaleml-operator", NAMESPACE)
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == replicas, name
        assert ("--standalone" in pod["containers"][0]["args"]) is standalone, name
        # Fields the other overlay set are gone: one field manager owns them all.
        assert ("topologySpreadConstraints" in pod) is not standalone, name
        assert (deployment["spec"]["strategy"]["type"] == "Recreate") is standalone, name
    budget = kubectl.get("poddisruptionbudget", "scaleml-operator", NAMESPACE)
    assert budget["spec"]["maxUnavailable"] == 1
    policy = kubectl.get("networkpolicy", "scaleml-operator", NAMESPACE)
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "scaleml-operator"}}


def test_the_components_apply_server_side_with_the_prometheus_operator_crds(
    prometheus_operator_crds: Kubectl, tmp_path: Path
) -> None:
    kubectl = prometheus_operator_crds
    directory = overlay(tmp_path, [BASE], [COMPONENTS / "prometheus", COMPONENTS / "grafana"])
    added = [
        m for m in build(directory) if m["kind"] in {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}
    ]
    assert len(added) == 9
    # Strict field validation: a field the Prometheus Operator's schema does not know is an error, not pruned.
    kubectl.run("apply", "--server-side", "--validate=strict", "-k", str(directory))
    try:
        for manifest in added:
            live = kubectl.get(manifest["kind"], manifest["metadata"]["name"], NAMESPACE)
            assert live["spec" if "spec" in manifest else "data"] == manifest["spec" if "spec" in manifest else "data"]
    finally:
        for manifest in added:
            kubectl.run("delete", manifest["kind"], manifest["metadata"]["name"], "-n", NAMESPACE, "--ignore-not-found")


def test_the_argocd_cm_patch_applies_next_to_argo_cds_own_settings(scaleml_installed: Kubectl) -> None:
    kubectl = scaleml_installed
    kubectl.run("create", "namespace", "argocd", check=False)
    settings = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "namespace": "argocd"}}
    kubectl.run(
        "apply",
        "--server-side",
        "--field-manager=argocd-install",
        "-f",
        "-",
        stdin=yaml.safe_dump({**settings, "data": {"url": "https://argocd.example.com"}}),
    )
    try:
        kubectl.run("apply", "--server-side", "-k", str(MANIFESTS / "argocd"))
        data = kubectl.get("configmap", "argocd-cm", "argocd")["data"]
        assert data["url"] == "https://argocd.example.com"
        assert set(data) == {
            "url",
            *(
                f"resource.customizations.health.scaleml.dev_{k}"
                for k in ("TrainingJob", "ModelDeployment", "DriftMonitor")
            ),
        }
    finally:
        kubectl.run("delete", "namespace", "argocd", "--wait=false")


# (allowed, verb, resource, subresource, namespace or None for all namespaces): what the operator does,
# and a wide sample of what it must never do.
CAN_I: list[Case] = [
    # The three kinds: watch, report status (and write nothing else of them); create and delete
    # TrainingJobs (retraining, TTL).
    (True, "list", "trainingjobs.scaleml.dev", "", None),
    (True, "watch", "modeldeployments.scaleml.dev", "", None),
    (False, "patch", "driftmonitors.scaleml.dev", "", None),
    (False, "update", "trainingjobs.scaleml.dev", "", None),
    (True, "patch", "trainingjobs.scaleml.dev", "status", None),
    (True, "patch", "modeldeployments.scaleml.dev", "status", None),
    (True, "patch", "driftmonitors.scaleml.dev", "status", None),
    (True, "get", "trainingjobs.scaleml.dev", "status", None),
    (True, "create", "trainingjobs.scaleml.dev", "", None),
    (True, "delete", "trainingjobs.scaleml.dev", "", None),
    # Their children.
    (True, "create", "jobs.batch", "", None),
    (True, "patch", "deployments.apps", "", None),
    (True, "create", "services", "", None),
    (True, "create", "serviceaccounts", "", None),
    (True, "patch", "rolebindings.rbac.authorization.k8s.io", "", None),
    (True, "list", "rolebindings.rbac.authorization.k8s.io", "", None),
    (False, "delete", "rolebindings.rbac.authorization.k8s.io", "", None),
    # Its pods' ClusterRoles it may bind, by name, and no other.
    (True, "bind", "clusterroles.rbac.authorization.k8s.io", "", None, "scaleml-trainer-status"),
    (True, "bind", "clusterroles.rbac.authorization.k8s.io", "", None, "scaleml-monitor-status"),
    (False, "bind", "clusterroles.rbac.authorization.k8s.io", "", None, "edit"),
    (True, "delete", "horizontalpodautoscalers.autoscaling", "", None),
    # Children that block their owner's deletion, where admission checks that right (OpenShift).
    (True, "update", "trainingjobs.scaleml.dev", "finalizers", None),
    (True, "update", "driftmonitors.scaleml.dev", "finalizers", None),
    (True, "delete", "poddisruptionbudgets.policy", "", None),
    (True, "watch", "pods", "", None),
    (True, "create", "events", "", None),
    # Events are read (a Job's FailedCreate), never watched: one list, narrowed, when a Job lacks pods.
    (True, "list", "events", "", None),
    (False, "watch", "events", "", None),
    # Its admission policy, read to know it is in force; no other, and nothing written.
    (True, "get", "validatingadmissionpolicies.admissionregistration.k8s.io", "", None, "scaleml-operator"),
    (True, "get", "validatingadmissionpolicybindings.admissionregistration.k8s.io", "", None, "scaleml-operator"),
    (False, "get", "validatingadmissionpolicies.admissionregistration.k8s.io", "", None, "other"),
    (False, "patch", "validatingadmissionpolicies.admissionregistration.k8s.io", "", None, "scaleml-operator"),
    # kopf: peering, CRDs and namespaces appearing.
    (True, "patch", "clusterkopfpeerings.kopf.dev", "", None),
    (True, "watch", "customresourcedefinitions.apiextensions.k8s.io", "", None),
    (True, "list", "namespaces", "", None),
    # The run configs of its pods: ConfigMaps it reads (whose is it?) before it applies one, and lists
    # (metadata only, its own) to find those deleted by hand; never watches or deletes.
    (True, "get", "configmaps", "", None),
    (True, "patch", "configmaps", "", None),
    (True, "list", "configmaps", "", None),
    (False, "watch", "configmaps", "", None),
    (False, "delete", "configmaps", "", None),
    # No Secret anywhere, not even in its own namespace.
    (False, "get", "secrets", "", None),
    (False, "list", "secrets", "", None),
    (False, "watch", "secrets", "", None),
    (False, "get", "secrets", "", NAMESPACE),
    # No pod of its own making: pods come from the Jobs and Deployments it owns. No way into pods.
    (False, "create", "pods", "", None),
    (False, "delete", "pods", "", None),
    (False, "create", "pods", "exec", None),
    (False, "create", "pods", "eviction", None),
    (False, "get", "pods", "log", None),
    # No escalation: no Roles of its own making, no impersonation, no tokens.
    (False, "escalate", "clusterroles.rbac.authorization.k8s.io", "", None),
    (False, "bind", "clusterroles.rbac.authorization.k8s.io", "", None),
    (False, "escalate", "roles.rbac.authorization.k8s.io", "", None),
    (False, "bind", "roles.rbac.authorization.k8s.io", "", None),
    (False, "create", "roles.rbac.authorization.k8s.io", "", None),
    (False, "patch", "roles.rbac.authorization.k8s.io", "", None),
    (False, "create", "clusterroles.rbac.authorization.k8s.io", "", None),
    (False, "patch", "clusterroles.rbac.authorization.k8s.io", "", None),
    (False, "create", "clusterrolebindings.rbac.authorization.k8s.io", "", None),
    (False, "impersonate", "users", "", None),
    (False, "impersonate", "serviceaccounts", "", None),
    (False, "create", "serviceaccounts", "token", None),
    (False, "create", "certificatesigningrequests.certificates.k8s.io", "", None),
    (False, "create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", None),
    # Nothing it does not delete itself; no namespaces, nodes or CRDs to change.
    (False, "delete", "namespaces", "", None),
    (False, "create", "namespaces", "", None),
    (False, "patch", "nodes", "", None),
    (False, "delete", "jobs.batch", "", None),
    (False, "delete", "deployments.apps", "", None),
    (False, "delete", "services", "", None),
    (False, "delete", "modeldeployments.scaleml.dev", "", None),
    (False, "create", "driftmonitors.scaleml.dev", "", None),
    (False, "update", "trainingjobs.scaleml.dev", "", None),
    (False, "update", "modeldeployments.scaleml.dev", "status", None),
    (False, "patch", "deployments.apps", "scale", None),
    (False, "create", "customresourcedefinitions.apiextensions.k8s.io", "", None),
    (False, "delete", "customresourcedefinitions.apiextensions.k8s.io", "", None),
    (False, "delete", "clusterkopfpeerings.kopf.dev", "", None),
    (False, "*", "*", "", None),
]


def test_the_operator_can_do_what_it_needs_and_nothing_more(scaleml_installed: Kubectl) -> None:
    assert wrong_answers(scaleml_installed, OPERATOR, CAN_I) == []


def _binding(namespace: str, cluster_role: str, account: str, **labels: str) -> str:
    # Labelled as the operator labels its children: the admission policy refuses any other (test_tenancy.py).
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": f"{account}-status",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, **labels},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    return json.dumps(binding)


def test_the_operator_binds_its_pods_cluster_roles_and_cannot_escalate(
    scaleml_installed: Kubectl, namespace: str
) -> None:
    def create_as_operator(manifest: str) -> str:
        result = scaleml_installed.run(
            "create", "--dry-run=server", f"--as={OPERATOR}", "-f", "-", stdin=manifest, check=False
        )
        return "created" if result.returncode == 0 else result.stderr

    # What it gives a TrainingJob's workers: patching their TrainingJob's status.
    workers = _binding(namespace, "scaleml-trainer-status", "churn-trainer", **{"scaleml.dev/trainingjob": "churn"})
    assert create_as_operator(workers) == "created"
    # Any other ClusterRole with rights it lacks is RBAC's to refuse (bind is granted by name), whatever the
    # admission policy would say.
    assert "forbidden" in create_as_operator(_binding(namespace, "cluster-admin", "default"))
    # And a Role of its own making, with rights it holds or not.
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "reader", "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "rules": [{"apiGroups": ["scaleml.dev"], "resources": ["trainingjobs/status"], "verbs": ["get"]}],
    }
    assert "forbidden" in create_as_operator(json.dumps(role))
