"""The sweep for children deleted by hand, against a real API server: the lists it reads, and what it finds."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from scaleml_operator.builders.meta import Children, Owner, RunConfig, identity
from scaleml_operator.kube import apply as kube
from scaleml_operator.reconcile import vanished
from scaleml_operator.reconcile.known import KNOWN
from scaleml_operator.reconcile.loop import apply_children
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl

pytestmark = pytest.mark.apiserver


@pytest.fixture(autouse=True)
def _kubeconfig(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))


def _config_map(owner: Owner) -> dict[str, Any]:
    return RunConfig(f"{owner.name}-config", "{}").config_map(owner, "scaleml-trainer")


def _made(namespace: str, name: str) -> Owner:
    owner = Owner("TrainingJob", name, namespace, str(uuid.uuid4()))
    account = identity(owner, f"{name}-trainer", "scaleml-trainer", "scaleml-trainer-status")
    children = apply_children(owner, Children(apply=[*account, _config_map(owner)]), True)
    assert not children.rejected
    assert not children.foreign
    return owner


def _gone(found: dict[Owner, list[Any]], owner: Owner) -> list[tuple[str, str]]:
    return sorted((child.kind, child.name) for child in found.get(owner, ()))


@pytest.mark.parametrize("cluster_wide", [True, False], ids=["cluster-wide", "by-namespace"])
def test_the_sweep_finds_the_children_deleted_or_replaced_by_hand_and_no_other(
    kubectl: Kubectl, namespace: str, cluster_wide: bool
) -> None:
    churn, other = _made(namespace, "churn"), _made(namespace, "other")
    assert _gone(vanished.sweep(cluster_wide), churn) == []

    kubectl.run("delete", "configmap", "churn-config", "-n", namespace)
    assert _gone(vanished.sweep(cluster_wide), churn) == [("ConfigMap", "churn-config")]
    assert _gone(vanished.sweep(cluster_wide), other) == []
    # Forgotten as known: the next apply makes it anew rather than failing on the old uid's precondition.
    assert KNOWN.uid(churn.uid, "ConfigMap", "churn-config") is None
    # Found once: the next sweep has nothing more to say about it.
    assert _gone(vanished.sweep(cluster_wide), churn) == []

    # Replaced by an object of the same name and labels: another uid, so gone all the same.
    account = kubectl.get("serviceaccount", "churn-trainer", namespace)
    kubectl.run("delete", "serviceaccount", "churn-trainer", "-n", namespace)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "churn-trainer", "labels": account["metadata"]["labels"]},
        },
        "-n",
        namespace,
    )
    assert _gone(vanished.sweep(cluster_wide), churn) == [("ServiceAccount", "churn-trainer")]


def test_the_lists_are_read_a_page_at_a_time_and_only_the_operators(
    kubectl: Kubectl, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    owners = [_made(namespace, f"paged-{index}") for index in range(3)]
    kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a-teams-own"}}, "-n", namespace)
    monkeypatch.setattr(kube, "_PAGE", 2)
    found = kube.uids("v1", "ConfigMap", namespace, vanished.SELECTOR)
    assert found == {KNOWN.uid(owner.uid, "ConfigMap", f"{owner.name}-config") for owner in owners}


@pytest.mark.parametrize("kind", sorted(vanished.SWEPT))
def test_every_swept_kind_can_be_listed_as_metadata(kind: str, namespace: str) -> None:
    assert kube.uids(vanished.SWEPT[kind], kind, namespace, vanished.SELECTOR) == set()
