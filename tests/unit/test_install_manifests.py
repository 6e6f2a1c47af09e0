"""The install manifests: the kustomize base, its development, production and namespaced overlays, and the
components."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from scaleml_operator.builders import driftmonitor, trainingjob
from scaleml_operator.config import DEFAULT_TRITON_IMAGE, DEFAULT_WORKLOAD_IMAGE
from scaleml_operator.kube.admission import guards
from tests.support.kustomize import BASE, COMPONENTS, MANIFESTS, OVERLAYS, build, find, overlay
from tests.support.manifests import Manifest

NAMESPACE = "scaleml-system"
PART_OF = {"app.kubernetes.io/part-of": "scaleml"}
# The namespace the namespaced overlay serves, as shipped.
SERVED = "scaleml-workloads"
# Components that add to any set-up; the others change what a set-up is (namespace-scoped), or are for the
# tenants' namespaces (network-policies), or are part of an overlay already (operator-network-policy).
ADD_ONS = ("grafana", "pod-service-accounts", "prometheus")
COMPONENT_NAMES = [
    "grafana",
    "namespace-scoped",
    "network-policies",
    "operator-network-policy",
    "pod-service-accounts",
    "prometheus",
]
# What the operator binds its pods' ServiceAccounts to, in their namespaces.
POD_CLUSTER_ROLES = (trainingjob.STATUS_ROLE, driftmonitor.STATUS_ROLE)
# Cluster-scoped kinds the install holds.
CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def _deployment(objects: list[Manifest]) -> Manifest:
    return find(objects, "Deployment", "scaleml-operator")


def _container(objects: list[Manifest]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = _deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def _key(manifest: Manifest) -> tuple[str, str]:
    return manifest["kind"], manifest["metadata"]["name"]


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    return build(BASE)


@pytest.fixture(scope="module")
def development() -> list[Manifest]:
    return build(OVERLAYS / "development")


@pytest.fixture(scope="module")
def production() -> list[Manifest]:
    return build(OVERLAYS / "production")


@pytest.fixture(scope="module")
def namespaced() -> list[Manifest]:
    return build(OVERLAYS / "namespaced")


def test_manifests_installs_the_base(base: list[Manifest]) -> None:
    assert build(MANIFESTS) == base
    assert {_key(m) for m in base} >= {
        ("CustomResourceDefinition", "trainingjobs.scaleml.dev"),
        ("CustomResourceDefinition", "modeldeployments.scaleml.dev"),
        ("CustomResourceDefinition", "driftmonitors.scaleml.dev"),
        ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "scaleml-operator"),
        ("ClusterRole", "scaleml-operator"),
        ("ClusterRoleBinding", "scaleml-operator"),
        ("Deployment", "scaleml-operator"),
        ("Service", "scaleml-operator-metrics"),
        ("ValidatingAdmissionPolicy", "scaleml-operator"),
        ("ValidatingAdmissionPolicyBinding", "scaleml-operator"),
    }


def test_every_overlay_and_component_renders_labelled_as_scaleml(tmp_path: Path) -> None:
    overlays = sorted(path for path in OVERLAYS.iterdir() if path.is_dir())
    assert [path.name for path in overlays] == ["development", "namespaced", "production"]
    assert sorted(path.name for path in COMPONENTS.iterdir() if path.is_dir()) == COMPONENT_NAMES
    for index, resource in enumerate([BASE, *overlays]):
        objects = build(overlay(tmp_path / str(index), [resource], [COMPONENTS / name for name in ADD_ONS]))
        unlabelled = [_key(m) for m in objects if not PART_OF.items() <= m["metadata"].get("labels", {}).items()]
        assert unlabelled == [], f"{resource.name}: objects without {PART_OF}"
        # Only the namespaced overlay reaches into a namespace it serves: its Role, RoleBinding and policies.
        served = {SERVED} if resource.name == "namespaced" else set()
        namespaced = [m for m in objects if m["kind"] not in CLUSTER_SCOPED]
        outside = [_key(m) for m in namespaced if m["metadata"].get("namespace") not in {NAMESPACE, *served}]
        assert outside == [], f"{resource.name}: objects outside {NAMESPACE}"


def test_the_overlays_change_only_the_operators_deployment_and_what_they_add(
    base: list[Manifest], development: list[Manifest], production: list[Manifest]
) -> None:
    unchanged = {_key(m): m for m in base if m["kind"] != "Deployment"}
    development_others = {_key(m): m for m in development if m["kind"] != "Deployment"}
    assert development_others == unchanged
    production_others = {_key(m): m for m in production if m["kind"] != "Deployment"}
    assert set(production_others) - set(unchanged) == {
        ("PodDisruptionBudget", "scaleml-operator"),
        ("NetworkPolicy", "scaleml-operator"),
    }
    assert {key: production_others[key] for key in unchanged} == unchanged


def test_development_runs_one_standalone_operator_with_debug_logs_and_small_requests(
    development: list[Manifest],
) -> None:
    deployment = _deployment(development)
    container = _container(development)
    assert deployment["spec"]["replicas"] == 1
    assert container["args"] == ["operator", "--standalone", "--verbose"]
    # Without peering, a rolling update would run the old and the new operator side by side.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}
    assert [m for m in development if m["kind"] == "PodDisruptionBudget"] == []


def test_production_runs_two_peered_operators_on_different_nodes_with_a_disruption_budget(
    production: list[Manifest],
) -> None:
    deployment = _deployment(production)
    container = _container(production)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert "--standalone" not in container["args"]
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    spread = {c["topologyKey"]: c for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    budget = find(production, "PodDisruptionBudget", "scaleml-operator")
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_every_set_up_runs_the_operator_under_the_restricted_pod_security_standard(
    base: list[Manifest], development: list[Manifest], production: list[Manifest], namespaced: list[Manifest]
) -> None:
    namespace = find(base, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for objects in (base, development, production, namespaced):
        pod = _deployment(objects)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert _container(objects)["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert pod["serviceAccountName"] == "scaleml-operator"


def test_the_operators_image_settings_are_its_defaults_for_overlays_to_patch(base: list[Manifest]) -> None:
    env = {variable["name"]: variable["value"] for variable in _container(base)["env"]}
    assert env == {"SCALEML_WORKLOAD_IMAGE": DEFAULT_WORKLOAD_IMAGE, "SCALEML_TRITON_IMAGE": DEFAULT_TRITON_IMAGE}


def test_argo_cd_syncs_the_crds_first_and_never_prunes_them(base: list[Manifest]) -> None:
    for manifest in base:
        annotations = manifest["metadata"].get("annotations", {})
        if manifest["kind"] == "CustomResourceDefinition":
            assert annotations["argocd.argoproj.io/sync-wave"] == "-1", manifest["metadata"]["name"]
            assert annotations["argocd.argoproj.io/sync-options"] == "Prune=false"
        else:
            assert "argocd.argoproj.io/sync-wave" not in annotations, _key(manifest)


def test_the_cluster_role_names_every_verb_and_resource(base: list[Manifest]) -> None:
    role = find(base, "ClusterRole", "scaleml-operator")
    assert "aggregationRule" not in role
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert rule[field], rule
            assert not any("*" in value for value in rule[field]), rule
        # Escalation and impersonation are never needed; it binds the pods' ClusterRoles, by name, and no other.
        assert not {"escalate", "impersonate"} & set(rule["verbs"]), rule
        if "bind" in rule["verbs"]:
            assert rule == {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["clusterroles"],
                "resourceNames": list(POD_CLUSTER_ROLES),
                "verbs": ["bind"],
            }
    binding = find(base, "ClusterRoleBinding", "scaleml-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "scaleml-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "scaleml-operator", "namespace": NAMESPACE}]


def test_the_pods_cluster_roles_grant_their_own_kinds_status_and_are_bound_only_per_namespace(
    base: list[Manifest],
) -> None:
    assert find(base, "ClusterRole", trainingjob.STATUS_ROLE)["rules"] == [
        {"apiGroups": ["scaleml.dev"], "resources": ["trainingjobs/status"], "verbs": ["get", "patch"]}
    ]
    assert find(base, "ClusterRole", driftmonitor.STATUS_ROLE)["rules"] == [
        {"apiGroups": ["scaleml.dev"], "resources": ["driftmonitors/status"], "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    bound = {m["roleRef"]["name"] for m in base if m["kind"] == "ClusterRoleBinding"}
    assert not bound & set(POD_CLUSTER_ROLES)


def _operator_account(objects: list[Manifest]) -> str:
    deployment = _deployment(objects)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    return f"system:serviceaccount:{deployment['metadata']['namespace']}:{account}"


def test_every_set_up_holds_the_operators_writes_to_the_admission_policy(
    base: list[Manifest], development: list[Manifest], production: list[Manifest], namespaced: list[Manifest]
) -> None:
    for objects in (base, development, production, namespaced):
        policy = find(objects, "ValidatingAdmissionPolicy", "scaleml-operator")
        binding = find(objects, "ValidatingAdmissionPolicyBinding", "scaleml-operator")
        assert binding["spec"]["policyName"] == "scaleml-operator"
        assert "Deny" in binding["spec"]["validationActions"]
        assert "matchResources" not in binding["spec"]
        assert policy["spec"]["failurePolicy"] == "Fail"
        # It matches the user the operator runs as, and only that user: a moved install must move it too.
        (condition,) = policy["spec"]["matchConditions"]
        assert condition["expression"] == f"request.userInfo.username == '{_operator_account(objects)}'"
        # Every write of every kind: a kind the policy does not name is refused, not let through.
        assert policy["spec"]["matchConstraints"]["resourceRules"] == [
            {
                "apiGroups": ["*"],
                "apiVersions": ["*"],
                "resources": ["*/*"],
                "operations": ["CREATE", "UPDATE", "DELETE"],
            }
        ]
        # ... so the operator relies on it to refuse others' objects, and applies new children unread.
        assert guards(_operator_account(objects), policy, binding)


def test_the_pod_service_accounts_policy_lets_the_operator_of_every_set_up_write_its_pods(
    tmp_path: Path,
    base: list[Manifest],
    development: list[Manifest],
    production: list[Manifest],
    namespaced: list[Manifest],
) -> None:
    objects = build(overlay(tmp_path, [], [COMPONENTS / "pod-service-accounts"]))
    policy = find(objects, "ValidatingAdmissionPolicy", "scaleml-pod-service-accounts")
    assert find(objects, "ValidatingAdmissionPolicyBinding", "scaleml-pod-service-accounts")["spec"] == {
        "policyName": "scaleml-pod-service-accounts",
        "validationActions": ["Deny", "Audit"],
    }
    (operator,) = [v["expression"] for v in policy["spec"]["variables"] if v["name"] == "operator"]
    for install in (base, development, production, namespaced):
        assert operator == f"'{_operator_account(install)}'"


# What a namespace-scoped operator may still touch beyond its served namespaces: cluster-scoped objects
# only, and of those it writes none but its peering object (see components/namespace-scoped).
CLUSTER_WIDE_GRANTS = {
    ("kopf.dev", "clusterkopfpeerings"): {"list", "watch", "create", "get", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "namespaces"): {"list", "watch"},
    ("admissionregistration.k8s.io", "validatingadmissionpolicies"): {"get"},
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"): {"get"},
}


def _grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def _cluster_roles(objects: list[Manifest]) -> list[str]:
    """The ClusterRoles of an install other than its pods' (which are bound only in namespaces)."""
    names = [m["metadata"]["name"] for m in objects if m["kind"] == "ClusterRole"]
    return [name for name in names if name not in POD_CLUSTER_ROLES]


def test_the_namespaced_overlay_grants_nothing_namespaced_cluster_wide(
    base: list[Manifest], namespaced: list[Manifest]
) -> None:
    assert _cluster_roles(namespaced) == ["scaleml-operator-cluster"]
    cluster_role = find(namespaced, "ClusterRole", "scaleml-operator-cluster")
    assert _grants(cluster_role["rules"]) == CLUSTER_WIDE_GRANTS
    # Renewing a peering record is limited to the operator's own peering object, reading its admission
    # policy to that policy.
    (patching,) = [rule for rule in cluster_role["rules"] if "patch" in rule["verbs"]]
    assert patching["resourceNames"] == ["scaleml"]
    (policy,) = [rule for rule in cluster_role["rules"] if "admissionregistration.k8s.io" in rule["apiGroups"]]
    assert policy["resourceNames"] == ["scaleml-operator"]
    bindings = [m for m in namespaced if m["kind"] == "ClusterRoleBinding"]
    assert [(m["metadata"]["name"], m["roleRef"]["name"]) for m in bindings] == [
        ("scaleml-operator-cluster", "scaleml-operator-cluster")
    ]
    # Everything else the base's ClusterRole grants, the Role grants in the served namespace, the same.
    role = find(namespaced, "Role", "scaleml-operator")
    assert role["metadata"]["namespace"] == SERVED
    base_role = find(base, "ClusterRole", "scaleml-operator")
    namespaced_rules = [
        rule
        for rule in base_role["rules"]
        if not {(g, r) for g in rule["apiGroups"] for r in rule["resources"]} & set(CLUSTER_WIDE_GRANTS)
    ]
    assert role["rules"] == namespaced_rules
    assert _grants(base_role["rules"]).keys() == _grants(role["rules"]).keys() | CLUSTER_WIDE_GRANTS.keys()


def _served(objects: list[Manifest]) -> tuple[set[str], set[str]]:
    """(The namespaces the operator is told to serve, those it holds a Role in.)"""
    args = _container(objects)["args"]
    told = {arg.removeprefix("--namespace=") for arg in args if arg.startswith("--namespace=")}
    bound = {
        m["metadata"]["namespace"]
        for m in objects
        if m["kind"] == "RoleBinding"
        and m["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scaleml-operator"}
        and m["subjects"] == [{"kind": "ServiceAccount", "name": "scaleml-operator", "namespace": NAMESPACE}]
    }
    return told, bound


def test_the_namespaced_operator_serves_exactly_the_namespaces_it_holds_a_role_in(namespaced: list[Manifest]) -> None:
    assert _served(namespaced) == ({SERVED}, {SERVED})
    # Peered, as the base: two replicas.
    assert _deployment(namespaced)["spec"]["replicas"] == 2
    assert "--standalone" not in _container(namespaced)["args"]
    namespace = find(namespaced, "Namespace", SERVED)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = {m["metadata"]["name"] for m in namespaced if m["kind"] == "NetworkPolicy"}
    assert policies == {"scaleml-trainer", "scaleml-triton", "scaleml-monitor"}


def test_a_platform_team_makes_production_namespace_scoped_for_its_namespaces(tmp_path: Path) -> None:
    """The recipe of components/namespace-scoped: production, a served-namespace per team, the args."""
    teams = ["team-a", "team-b"]
    for team in teams:
        directory = overlay(tmp_path / team, [OVERLAYS / "namespaced" / "served-namespace"])
        (directory / "kustomization.yaml").write_text(
            f"namespace: {team}\n" + (directory / "kustomization.yaml").read_text()
        )
    root = overlay(tmp_path / "platform", [OVERLAYS / "production", *(tmp_path / team for team in teams)])
    args = json.dumps(["operator", *(f"--namespace={team}" for team in teams)])
    patch = '[{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": ' + args + "}]"
    (root / "kustomization.yaml").write_text(
        (root / "kustomization.yaml").read_text()
        + f"components: [{os.path.relpath(COMPONENTS / 'namespace-scoped', root)}]\n"
        + f"patches:\n  - target: {{kind: Deployment, name: scaleml-operator}}\n    patch: '{patch}'\n"
    )
    objects = build(root)
    assert _served(objects) == (set(teams), set(teams))
    assert _cluster_roles(objects) == ["scaleml-operator-cluster"]
    # Production's own parts stay.
    assert find(objects, "PodDisruptionBudget", "scaleml-operator")
    assert find(objects, "NetworkPolicy", "scaleml-operator")["metadata"]["namespace"] == NAMESPACE


def test_production_lets_only_the_monitoring_namespace_reach_the_operators_metrics(
    production: list[Manifest],
) -> None:
    policy = find(production, "NetworkPolicy", "scaleml-operator")
    pod_labels = _deployment(production)["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    metrics = next(p["containerPort"] for p in _container(production)["ports"] if p["name"] == "metrics")
    assert rule["ports"] == [{"protocol": "TCP", "port": metrics}]
