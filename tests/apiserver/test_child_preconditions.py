"""Children applied by their uid, against the real API server: the precondition guards what the operator knows.

A child the operator applied before is applied again in one request carrying its uid. These tests
show what that precondition buys: a child replaced meanwhile by someone else's object of the same
name is neither changed nor adopted, and nothing is created in the name of a uid that is not there.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from scaleml_api.v1alpha1.modeldeployment import Autoscaling, ModelDeploymentSpec
from scaleml_operator.builders import modeldeployment as serving
from scaleml_operator.builders.meta import Children, Owner, RunConfig
from scaleml_operator.config import OperatorConfig
from scaleml_operator.kube import apply as kube
from scaleml_operator.kube.client import request
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile.known import KNOWN
from scaleml_operator.reconcile.loop import Context, apply_children, run
from scaleml_operator.reconcile.trainingjob import RECONCILER
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for

pytestmark = pytest.mark.apiserver


@pytest.fixture(autouse=True)
def _kubeconfig(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))


def _config_map(owner: Owner, text: str) -> dict[str, Any]:
    return RunConfig("churn-config", text).config_map(owner, "scaleml-trainer")


def test_a_known_child_is_updated_and_a_replaced_one_is_reported_and_left_alone(
    kubectl: Kubectl, namespace: str
) -> None:
    owner = Owner("TrainingJob", "churn", namespace, str(uuid.uuid4()))

    first = apply_children(owner, Children(apply=[_config_map(owner, "one")]), True)
    created = first.live[("ConfigMap", "churn-config")]
    assert KNOWN.uid(owner.uid, "ConfigMap", "churn-config") == created["metadata"]["uid"]

    again = apply_children(owner, Children(apply=[_config_map(owner, "two")]), True)
    updated = again.live[("ConfigMap", "churn-config")]
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["data"]["run.json"] == "two"

    # Someone else's object takes the name: the operator still knows the old uid.
    kubectl.run("delete", "configmap", "churn-config", "-n", namespace)
    kubectl.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "churn-config"}, "data": {"x": "1"}},
        "-n",
        namespace,
    )
    replaced = apply_children(owner, Children(apply=[_config_map(owner, "three")]), True)
    assert replaced.foreign == ["ConfigMap churn-config"]
    foreign = kubectl.get("configmap", "churn-config", namespace)
    assert foreign["data"] == {"x": "1"}
    assert "ownerReferences" not in foreign["metadata"]
    assert KNOWN.uid(owner.uid, "ConfigMap", "churn-config") is None


def test_nothing_is_created_in_the_name_of_a_uid_that_is_not_there(kubectl: Kubectl, namespace: str) -> None:
    owner = Owner("TrainingJob", "churn", namespace, str(uuid.uuid4()))
    with pytest.raises(kube.NotThatObjectError):
        kube.apply(_config_map(owner, "one"), uid=str(uuid.uuid4()))
    assert kubectl.find("configmap", "churn-config", namespace) is None


def test_a_delete_by_uid_leaves_another_object_of_the_name(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}, "-n", namespace)
    assert not kube.delete("v1", "ConfigMap", "other", namespace, uid=str(uuid.uuid4()))
    assert kubectl.find("configmap", "other", namespace) is not None


def _delete_namespace(kubectl: Kubectl, namespace: str) -> Owner:
    """Deletes the namespace, which stays Terminating (no namespace controller runs in this tier), and
    returns once the API server refuses to create in it: an owner whose children it refused."""
    owner = Owner("TrainingJob", "churn", namespace, str(uuid.uuid4()))
    kubectl.run("delete", "namespace", namespace, "--wait=false")
    attempts = iter(range(1000))

    def refused() -> bool:
        # A new name each time: what the admission's cache let through meanwhile was a create.
        manifest = merged(_config_map(owner, "one"), {"metadata": {"name": f"churn-config-{next(attempts)}"}})
        try:
            kube.apply(manifest)
        except kube.NamespaceTerminatingError:
            return True
        return False

    wait_for(refused, 10, "the API server to refuse creating in the namespace")
    return owner


def test_nothing_is_made_anew_in_a_namespace_being_deleted_and_that_is_told_apart(
    kubectl: Kubectl, namespace: str
) -> None:
    """Its children's deletions trigger refreshes: the API server's refusal to create is a signal, not an error."""
    owner = _delete_namespace(kubectl, namespace)
    with pytest.raises(kube.NamespaceTerminatingError):
        kube.create(merged(_config_map(owner, "one"), {"metadata": {"name": "churn-created"}}))


def test_an_object_of_a_namespace_being_deleted_costs_one_refused_write_and_then_none(
    scaleml_installed: Kubectl, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting a namespace removes children before their owners; each owner's run would make them anew."""
    kubectl = scaleml_installed
    kubectl.apply(merged(example("TrainingJob"), {"metadata": {"name": "churn", "namespace": namespace}}))
    body = kubectl.get("trainingjob", "churn", namespace)
    _delete_namespace(kubectl, namespace)
    sent: list[str] = []

    def counted(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        sent.append(f"{method} {path}")
        return request(method, path, **kwargs)

    monkeypatch.setattr(kube, "request", counted)
    # The watches' caches, empty: no Job or pod of it was seen.
    context = Context(OperatorConfig(), {index: {} for index in (cache.JOBS, cache.TRAINING_PODS)})
    # The first run applies the first child, and the API server refuses it: the run did not go through.
    assert run(RECONCILER, "churn", namespace, context, full=True, body=body) is False
    assert sent, "the first run made no request"
    sent.clear()
    # Every later run of it (each deletion of a child brings one) knows, and asks nothing.
    assert run(RECONCILER, "churn", namespace, context, full=True, body=body) is False
    assert sent == []


@pytest.mark.parametrize("autoscaler_owns_them", [False, True])
def test_turning_on_autoscaling_keeps_the_replicas_until_the_autoscaler_takes_them(
    kubectl: Kubectl, namespace: str, autoscaler_owns_them: bool
) -> None:
    """Server-side apply removes a field its only manager stops applying: a Deployment of 8 would drop to 1."""
    owner = Owner("ModelDeployment", "churn", namespace, str(uuid.uuid4()))
    fixed = ModelDeploymentSpec.model_validate(
        merged(example("ModelDeployment"), {"spec": {"autoscaling": None, "replicas": 8}})["spec"]
    )
    source, images = serving.ModelSource("models", "churn", 3), ("triton:1", "workloads:1")
    first = apply_children(owner, serving.children(owner, fixed, source, images), True)
    live = first.live[("Deployment", "churn-triton")]
    assert live["spec"]["replicas"] == 8
    if autoscaler_owns_them:
        # The autoscaler scaled it since, through the scale subresource, as the HPA controller does.
        kubectl.run("scale", "deployment", "churn-triton", "--replicas=5", "-n", namespace)
        live = kubectl.get("deployment", "churn-triton", namespace)

    scaled = fixed.model_copy(update={"autoscaling": Autoscaling(min_replicas=2, max_replicas=12)})
    applied = apply_children(owner, serving.children(owner, scaled, source, images, live), True)
    assert "HorizontalPodAutoscaler" in [kind for kind, _ in applied.live]
    shown = ("get", "deployment", "churn-triton", "-n", namespace, "-o", "json", "--show-managed-fields")
    after = json.loads(kubectl.run(*shown).stdout)
    assert after["spec"]["replicas"] == (5 if autoscaler_owns_them else 8)
    # The operator's own manager no longer sets them: the autoscaler's writes are not undone.
    managers = {entry["manager"]: entry for entry in after["metadata"]["managedFields"]}
    assert "f:replicas" not in managers["scaleml-operator"]["fieldsV1"]["f:spec"]
