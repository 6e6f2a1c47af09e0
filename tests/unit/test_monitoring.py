"""Prometheus and Grafana parts: alerts promtool checks and tests, dashboards whose queries parse and use
only metrics the components export, and monitors that select the pods the operator builds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import driftmonitor, modeldeployment, trainingjob
from scaleml_operator.builders.meta import Owner
from tests.support import tools
from tests.support.kustomize import BASE, COMPONENTS, build, find, overlay
from tests.support.manifests import ROOT, Manifest, example
from tests.support.metrics_catalog import EXPORTED, KUBE_STATE_METRICS
from tests.support.promql import Query, check_parse, selected_metrics, variable_selector

ALERTS = COMPONENTS / "prometheus" / "alerts.yaml"
ALERT_TESTS = Path(__file__).parent / "promtool" / "alerts.test.yaml"
DASHBOARDS = COMPONENTS / "grafana" / "dashboards"
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


def _rule_groups() -> dict[str, Any]:
    rule: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    assert rule["kind"] == "PrometheusRule"
    return rule["spec"]  # type: ignore[no-any-return]


def _dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def _queries() -> list[Query]:
    queries = [
        Query(f"alert {rule['alert']}", rule["expr"]) for group in _rule_groups()["groups"] for rule in group["rules"]
    ]
    for name, dashboard in _dashboards().items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                selector = variable_selector(variable["query"]["query"])
                assert selector, f"{name}: variable {variable['name']} is not label_values(selector, label)"
                queries.append(Query(f"{name} variable {variable['name']}", selector))
        for panel in _panels(dashboard):
            for target in panel["targets"]:
                queries.append(Query(f"{name} panel {panel['title']!r} {target['refId']}", target["expr"]))
    return queries


@pytest.fixture(scope="module")
def promtool() -> Path:
    return tools.promtool()


@pytest.fixture(scope="module")
def selected(promtool: Path) -> dict[Query, frozenset[str]]:
    """The metric names each query selects, as Prometheus's parser sees them."""
    queries = _queries()
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(queries, pool.map(lambda q: selected_metrics(promtool, q.expr), queries), strict=True))


def test_the_makefile_installs_the_tool_versions_the_tests_look_for() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^PROMTOOL_VERSION \?= {re.escape(tools.PROMTOOL_VERSION)}$", makefile, re.MULTILINE)
    assert re.search(
        rf"^PROMETHEUS_OPERATOR_VERSION \?= {re.escape(tools.PROMETHEUS_OPERATOR_VERSION)}$", makefile, re.MULTILINE
    )


def test_alert_rules_pass_promtool_check_and_their_unit_tests(promtool: Path, tmp_path: Path) -> None:
    (tmp_path / "alerts.rules.yaml").write_text(yaml.safe_dump(_rule_groups(), sort_keys=False))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    for command in (["check", "rules", "alerts.rules.yaml"], ["test", "rules", ALERT_TESTS.name]):
        result = subprocess.run([str(promtool), *command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"promtool {' '.join(command)}:\n{result.stdout}{result.stderr}"


def test_every_alert_has_a_unit_test_where_it_fires() -> None:
    alerts = {rule["alert"] for group in _rule_groups()["groups"] for rule in group["rules"]}
    firing = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert firing == alerts


def test_every_dashboard_query_parses(promtool: Path, tmp_path: Path) -> None:
    check_parse(promtool, _queries(), tmp_path)


def test_dashboards_and_alerts_query_only_metrics_the_components_export(
    selected: dict[Query, frozenset[str]],
) -> None:
    allowed = frozenset().union(*EXPORTED.values(), KUBE_STATE_METRICS)
    unknown = {query.origin: sorted(names - allowed) for query, names in selected.items() if names - allowed}
    assert unknown == {}
    assert all(selected.values()), [query.origin for query, names in selected.items() if not names]
    unused = allowed - frozenset().union(*selected.values())
    assert unused == set(), "catalogued but never queried"


def test_dashboards_are_well_formed() -> None:
    uids = set()
    for name, dashboard in _dashboards().items():
        uids.add(dashboard["uid"])
        assert dashboard["title"].startswith("ScaleML / "), name
        assert "scaleml" in dashboard["tags"], name
        variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        panels = dashboard["panels"]
        assert len({panel["id"] for panel in panels}) == len(panels), f"{name}: panel ids repeat"
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name}: {panel['title']} is wider than the dashboard"
        for panel in _panels(dashboard):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], f"{name}: {panel['title']}"
            assert panel["description"], f"{name}: {panel['title']}"
            assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"]
                used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", target["expr"]))
                undefined = used - set(variables) - GRAFANA_BUILTINS
                assert not undefined, f"{name}: {panel['title']} uses undefined variables {undefined}"
    assert len(uids) == len(_dashboards())


def test_the_grafana_component_ships_every_dashboard_to_the_sidecar(tmp_path: Path) -> None:
    objects = build(overlay(tmp_path, [BASE], [COMPONENTS / "grafana"]))
    shipped = {}
    for manifest in objects:
        if manifest["kind"] == "ConfigMap" and manifest["metadata"]["name"].startswith("scaleml-dashboard-"):
            assert manifest["metadata"]["labels"]["grafana_dashboard"] == "1"
            shipped.update(manifest["data"])
    assert shipped == {name: (DASHBOARDS / name).read_text() for name in _dashboards()}


def _pods() -> dict[str, dict[str, Any]]:
    """The pod templates the operator builds for the examples, by their app.kubernetes.io/name."""
    training = TrainingJobSpec.model_validate(example("TrainingJob")["spec"])
    serving = ModelDeploymentSpec.model_validate(example("ModelDeployment")["spec"])
    monitoring = DriftMonitorSpec.model_validate(example("DriftMonitor")["spec"])
    assert serving.capture.enabled
    templates = [
        trainingjob.pod_template(Owner("TrainingJob", "churn", "ml", "uid-1"), training, "workloads"),
        modeldeployment.pod_template(
            Owner("ModelDeployment", "churn", "ml", "uid-2"),
            serving,
            modeldeployment.ModelSource("models", "churn", 3),
            ("triton", "workloads"),
        ),
        driftmonitor.pod_template(
            Owner("DriftMonitor", "churn", "ml", "uid-3"),
            monitoring,
            driftmonitor.Inputs("captures", "models", "churn/3/profile.json", 3, "churn"),
            "workloads",
        ),
    ]
    return {template["metadata"]["labels"]["app.kubernetes.io/name"]: template for template in templates}


def _port_names(pod: dict[str, Any]) -> set[str]:
    containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
    return {port["name"] for container in containers for port in container.get("ports", [])}


def _meta_label(label: str) -> str:
    """Prometheus's name for a pod label in Kubernetes service discovery."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^A-Za-z0-9_]", "_", label)


def test_pod_monitors_select_the_pods_the_operator_builds_and_name_their_metrics_ports(tmp_path: Path) -> None:
    objects = build(overlay(tmp_path, [BASE], [COMPONENTS / "prometheus"]))
    pods = _pods()
    monitors: list[Manifest] = [m for m in objects if m["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == set(pods)
    for monitor in monitors:
        spec = monitor["spec"]
        matching = [
            name
            for name, pod in pods.items()
            if spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        ]
        assert matching == [monitor["metadata"]["name"]]
        pod = pods[matching[0]]
        assert spec["namespaceSelector"] == {"any": True}
        for endpoint in spec["podMetricsEndpoints"]:
            assert endpoint["port"] in _port_names(pod), (monitor["metadata"]["name"], endpoint["port"])
            sources = {label for relabel in endpoint["relabelings"] for label in relabel["sourceLabels"]}
            assert sources <= {_meta_label(label) for label in pod["metadata"]["labels"]}


def test_the_service_monitor_selects_the_operators_metrics_service(tmp_path: Path) -> None:
    objects = build(overlay(tmp_path, [BASE], [COMPONENTS / "prometheus"]))
    monitor = find(objects, "ServiceMonitor", "scaleml-operator")
    service = find(objects, "Service", "scaleml-operator-metrics")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
