"""The install manifests: the kustomize base, its development and production overlays, and the components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scaleml_operator.config import DEFAULT_TRITON_IMAGE, DEFAULT_WORKLOAD_IMAGE
from tests.support.kustomize import BASE, COMPONENTS, MANIFESTS, OVERLAYS, build, find, overlay
from tests.support.manifests import Manifest

NAMESPACE = "scaleml-system"
PART_OF = {"app.kubernetes.io/part-of": "scaleml"}


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
    }


def test_every_overlay_and_component_renders_labelled_as_scaleml(tmp_path: Path) -> None:
    overlays = sorted(path for path in OVERLAYS.iterdir() if path.is_dir())
    components = sorted(path for path in COMPONENTS.iterdir() if path.is_dir())
    assert [path.name for path in overlays] == ["development", "production"]
    assert [path.name for path in components] == ["grafana", "prometheus"]
    for index, resource in enumerate([BASE, *overlays]):
        objects = build(overlay(tmp_path / str(index), [resource], components))
        unlabelled = [_key(m) for m in objects if not PART_OF.items() <= m["metadata"].get("labels", {}).items()]
        assert unlabelled == [], f"{resource.name}: objects without {PART_OF}"
        namespaced = [m for m in objects if m["kind"] not in {"Namespace", "CustomResourceDefinition", "ClusterRole"}]
        outside = [_key(m) for m in namespaced if m["metadata"].get("namespace", NAMESPACE) != NAMESPACE]
        assert outside == [], f"{resource.name}: objects outside {NAMESPACE}"


def test_the_overlays_change_only_the_operators_deployment_and_its_disruption_budget(
    base: list[Manifest], development: list[Manifest], production: list[Manifest]
) -> None:
    unchanged = {_key(m): m for m in base if m["kind"] != "Deployment"}
    for objects in (development, production):
        others = {_key(m): m for m in objects if m["kind"] not in {"Deployment", "PodDisruptionBudget"}}
        assert others == unchanged


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
    base: list[Manifest], development: list[Manifest], production: list[Manifest]
) -> None:
    namespace = find(base, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for objects in (base, development, production):
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
        # Escalation and impersonation are never needed: the operator grants only what it holds.
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
    binding = find(base, "ClusterRoleBinding", "scaleml-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "scaleml-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "scaleml-operator", "namespace": NAMESPACE}]
