"""ScaleML's NetworkPolicies, read the way a network plugin enforces them, against the pods the builders make.

No network plugin runs in the test cluster (tests/apiserver/test_tenancy.py only applies the policies), so
this evaluates them: a pod's ingress is open until a policy of its namespace selects it, and then only what
one of those policies' rules allows (the NetworkPolicy semantics of the Kubernetes API reference; kubelet
probes aside, which no policy restricts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scaleml_api import runtime
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import driftmonitor, modeldeployment, trainingjob
from scaleml_operator.builders.meta import Owner
from tests.support.kustomize import COMPONENTS, build, overlay
from tests.support.manifests import Manifest, example, merged

TENANT = "team-a"
MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
CLIENT = {"scaleml.dev/inference-client": "true"}
# An ephemeral port, as gloo, NCCL and rank 0's c10d store pick them.
COLLECTIVE_PORT = 41234


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def all_namespace_labels(self) -> dict[str, str]:
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matches = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matches:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pods talk pod to pod here; no policy of ours names addresses
    if "namespaceSelector" in peer:
        namespace_ok = _selects(peer["namespaceSelector"], pod.all_namespace_labels)
    else:
        namespace_ok = pod.namespace == policy_namespace
    return namespace_ok and _selects(peer.get("podSelector", {}), pod.labels)


def _port_matches(ports: Sequence[Mapping[str, Any]] | None, port: int, target: Pod) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != "TCP":
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        number = target.ports.get(wanted) if isinstance(wanted, str) else wanted
        if number is not None and number <= port <= entry.get("endPort", number):
            return True
    return False


def allowed(policies: Sequence[Manifest], source: Pod, target: Pod, port: int) -> bool:
    """Whether `source` may open a TCP connection to `target`'s `port`: its egress, then target's ingress."""
    for direction, subject, peer, rules_key, peers_key in (
        ("Egress", source, target, "egress", "to"),
        ("Ingress", target, source, "ingress", "from"),
    ):
        selecting = [
            policy
            for policy in policies
            if policy["metadata"]["namespace"] == subject.namespace
            and direction in policy["spec"].get("policyTypes", ["Ingress"])
            and _selects(policy["spec"]["podSelector"], subject.labels)
        ]
        if selecting and not any(
            (not rule.get(peers_key) or any(_peer_matches(p, subject.namespace, peer) for p in rule[peers_key]))
            and _port_matches(rule.get("ports"), port, target)
            for policy in selecting
            for rule in policy["spec"].get(rules_key) or []
        ):
            return False
    return True


def _pod(template: Mapping[str, Any], namespace: str = TENANT) -> Pod:
    spec = template["spec"]
    ports = {
        port["name"]: port["containerPort"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]
        for port in container.get("ports", [])
    }
    return Pod(namespace, dict(template["metadata"]["labels"]), ports)


def _trainer(name: str, namespace: str = TENANT) -> Pod:
    spec = TrainingJobSpec.model_validate(example("TrainingJob")["spec"])
    return _pod(trainingjob.pod_template(Owner("TrainingJob", name, namespace, "uid"), spec, "img"), namespace)


def _triton(capture: bool = True) -> Pod:
    changes = {"capture": {"enabled": capture}}
    spec = ModelDeploymentSpec.model_validate(merged(example("ModelDeployment"), {"spec": changes})["spec"])
    owner = Owner("ModelDeployment", "churn", TENANT, "uid")
    source = modeldeployment.ModelSource("models", "churn", 1)
    return _pod(modeldeployment.pod_template(owner, spec, source, ("triton", "img")))


def _monitor() -> Pod:
    spec = DriftMonitorSpec.model_validate(example("DriftMonitor")["spec"])
    inputs = driftmonitor.Inputs("captures", "models", "churn/1/profile.json", 1, "churn")
    return _pod(driftmonitor.pod_template(Owner("DriftMonitor", "churn", TENANT, "uid"), spec, inputs, "img"))


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """The component, applied to one tenant namespace as the platform team does."""
    directory = tmp_path_factory.mktemp("tenant")
    overlay(directory, [], [COMPONENTS / "network-policies"])
    kustomization = (directory / "kustomization.yaml").read_text()
    (directory / "kustomization.yaml").write_text(f"namespace: {TENANT}\n{kustomization}")
    rendered = build(Path(directory))
    assert {m["kind"] for m in rendered} == {"NetworkPolicy"}
    assert {m["metadata"]["namespace"] for m in rendered} == {TENANT}
    return rendered


def test_training_workers_reach_each_other_on_every_port_and_nobody_else_does(policies: list[Manifest]) -> None:
    worker, peer = _trainer("churn"), _trainer("churn")
    for port in (runtime.RENDEZVOUS_PORT, COLLECTIVE_PORT, runtime.METRICS_PORT):
        assert allowed(policies, peer, worker, port), port
    outsiders = [
        # The same labels in another namespace, the namespace's other ScaleML pods and its other pods.
        _trainer("churn", namespace="team-b"),
        _triton(),
        _monitor(),
        Pod(TENANT, {"app": "notebook"}),
        Pod(TENANT, {**CLIENT}),
    ]
    for outsider in outsiders:
        for port in (runtime.RENDEZVOUS_PORT, COLLECTIVE_PORT):
            assert not allowed(policies, outsider, worker, port), (outsider, port)


def test_one_namespaces_training_jobs_are_not_kept_apart(policies: list[Manifest]) -> None:
    """What a namespace-wide policy cannot do: a policy per TrainingJob (from the operator) would."""
    assert allowed(policies, _trainer("other-job"), _trainer("churn"), runtime.RENDEZVOUS_PORT)


@pytest.mark.parametrize("capture", [True, False])
def test_models_answer_labelled_clients_only_and_send_nothing_out(policies: list[Manifest], capture: bool) -> None:
    triton = _triton(capture)
    # Capture on or off, clients call Triton itself.
    inference = [runtime.TRITON_HTTP_PORT, runtime.TRITON_GRPC_PORT]
    client = Pod(TENANT, CLIENT)
    for port in inference:
        assert allowed(policies, client, triton, port), port
        assert not allowed(policies, Pod(TENANT, {"app": "web"}), triton, port), port
        assert not allowed(policies, Pod("team-b", CLIENT), triton, port), port
        assert not allowed(policies, _trainer("churn"), triton, port), port
    for port in (runtime.TRITON_METRICS_PORT, runtime.AGENT_HEALTH_PORT):
        assert not allowed(policies, client, triton, port), port
    # Nothing leaves a Triton pod: not to the namespace, the API server's network or anywhere.
    for target in (Pod(TENANT, {"app": "web"}, {"http": 80}), Pod("kube-system", {"k8s-app": "kube-dns"})):
        assert not allowed(policies, triton, target, 80)
        assert not allowed(policies, triton, target, 53)


def test_metrics_and_drift_reports_are_for_the_monitoring_namespace_only(policies: list[Manifest]) -> None:
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    # A namespace labelled to look like it: only the name the API server sets counts.
    impostor = Pod("team-b", {"app.kubernetes.io/name": "prometheus"}, namespace_labels={"monitoring": "true"})
    neighbour = Pod(TENANT, {"app": "web"})
    cases = [
        (_trainer("churn"), [runtime.METRICS_PORT]),
        (_triton(), [runtime.TRITON_METRICS_PORT, runtime.CAPTURE_METRICS_PORT]),
        (_monitor(), [runtime.METRICS_PORT, runtime.REPORT_PORT]),
    ]
    for target, ports in cases:
        for port in ports:
            assert allowed(policies, prometheus, target, port), (target.labels, port)
            assert not allowed(policies, impostor, target, port), (target.labels, port)
            assert not allowed(policies, neighbour, target, port), (target.labels, port)
    assert not allowed(policies, prometheus, _trainer("churn"), runtime.RENDEZVOUS_PORT)
    assert not allowed(policies, prometheus, _triton(), runtime.TRITON_HTTP_PORT)


def test_every_port_a_scaleml_pod_declares_is_open_to_someone(policies: list[Manifest]) -> None:
    """A port the builders add without a rule here would be closed to everyone: caught before it ships."""
    sources = [
        _trainer("peer"),
        Pod(TENANT, CLIENT),
        Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}),
    ]
    kubelet_only = {"agent-health"}
    for target in (_trainer("churn"), _triton(capture=True), _monitor()):
        for name, port in target.ports.items():
            if name in kubelet_only:
                continue
            assert any(allowed(policies, source, target, port) for source in sources), (target.labels, name)


def test_other_pods_of_the_namespace_are_left_alone(policies: list[Manifest]) -> None:
    web = Pod(TENANT, {"app": "web"}, {"http": 8080})
    assert allowed(policies, Pod("team-b", {}), web, 8080)
    assert allowed(policies, web, Pod("team-b", {}), 443)
