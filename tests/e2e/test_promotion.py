"""Promotion gates on a cluster: a worse retrained version is held back, the annotation overrides, a good one rolls.

The tests play the trainer pods' part: each export patches the TrainingJob's status with the
version and its evaluation, in one write, as the ServiceAccount the operator gave the pods.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from tests.e2e.scenario import condition, export, model_deployment, status, training_job
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.operator_process import OperatorProcess, start_operator
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

GATES = {"minMetric": 0.8, "maxRegression": 0.02, "maxGroupGap": {"demographicParityDifference": 0.1}}


@pytest.fixture(scope="module")
def gated_operator(
    cluster: ControlPlane, scaleml_installed: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = start_operator(cluster, tmp_path_factory, "e2e-promotion")
    yield process
    process.stop()


def _evaluation(accuracy: float, baselines: dict[int, float], parity: float = 0.04) -> dict[str, Any]:
    return {
        "metric": "accuracy",
        "metrics": {"accuracy": accuracy},
        "rows": 400,
        "fairness": [{"feature": "region", "demographicParityDifference": parity, "smallGroups": 1}],
        "baselines": [{"version": version, "metrics": {"accuracy": value}} for version, value in baselines.items()],
    }


def _served(kubectl: Kubectl, namespace: str, version: int, held: int | None = None) -> dict[str, Any] | None:
    found = status(kubectl, "modeldeployment", "churn", namespace)
    wanted = found.get("phase") == "Ready" and found.get("servedVersion") == version
    return found if wanted and found.get("candidateVersion") == held else None


def _deployed_version(kubectl: Kubectl, namespace: str) -> str:
    deployment = kubectl.get("deployment", "churn-triton", namespace)
    return str(deployment["spec"]["template"]["metadata"]["annotations"]["scaleml.dev/model-version"])


def test_a_worse_version_is_held_back_until_promoted_by_hand(
    kubectl: Kubectl, claims_namespace: str, gated_operator: OperatorProcess
) -> None:
    namespace = claims_namespace
    training_job(kubectl, namespace)
    export(kubectl, namespace, 1, evaluation=_evaluation(0.91, {}))
    kubectl.apply(model_deployment(autoscaling=None, promotion={"gates": GATES}), "-n", namespace)
    first = wait_for(partial(_served, kubectl, namespace, 1), 90, "version 1 to be served")
    assert condition(first, "Promoted")["reason"] == "GatesPassed"

    # A retrained version, 0.05 below the served one on its own validation rows.
    export(kubectl, namespace, 2, evaluation=_evaluation(0.87, {1: 0.92}))
    held = wait_for(partial(_served, kubectl, namespace, 1, 2), 60, "version 2 to be held back")
    promoted = condition(held, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "GateFailed")
    assert promoted["message"] == (
        "Version 2 failed: maxRegression: accuracy 0.87 against 0.92 of served version 1, worse by 0.05 > 0.02. "
        "Passed: accuracy 0.87 >= minMetric 0.8; demographicParityDifference of region 0.04 <= 0.1. "
        "Version 1 stays served."
    )
    assert _deployed_version(kubectl, namespace) == "1"
    kubectl.await_event_reasons(namespace, "ModelDeployment", {"VersionHeldBack"})
    warnings = re.search(
        r'scaleml_operator_warning_events_total\{kind="ModelDeployment",reason="VersionHeldBack"\} (\S+)',
        gated_operator.metrics(),
    )
    assert warnings is not None
    assert float(warnings.group(1)) >= 1

    # The audited override: the held version rolls out, and the status records it.
    kubectl.run("annotate", "modeldeployment", "churn", "-n", namespace, "scaleml.dev/promote=2")
    overridden = wait_for(partial(_served, kubectl, namespace, 2), 90, "version 2 to be served on the annotation")
    assert condition(overridden, "Promoted")["reason"] == "PromotedByAnnotation"
    assert overridden["override"]["version"] == 2
    assert "maxRegression" in overridden["override"]["failed"]
    assert _deployed_version(kubectl, namespace) == "2"
    kubectl.await_event_reasons(namespace, "ModelDeployment", {"VersionPromotedByAnnotation"})

    # A version within the gates rolls as before.
    export(kubectl, namespace, 3, evaluation=_evaluation(0.9, {2: 0.895, 1: 0.91}))
    passed = wait_for(partial(_served, kubectl, namespace, 3), 90, "version 3 to be served")
    assert condition(passed, "Promoted")["reason"] == "GatesPassed"
    assert passed["override"]["version"] == 2


def test_a_first_version_that_fails_is_not_served_and_unfair_ones_are_held(
    kubectl: Kubectl, claims_namespace: str, gated_operator: OperatorProcess
) -> None:
    namespace = claims_namespace
    training_job(kubectl, namespace)
    export(kubectl, namespace, 1, evaluation=_evaluation(0.95, {}, parity=0.3))
    kubectl.apply(model_deployment(autoscaling=None, promotion={"gates": GATES}), "-n", namespace)

    def held() -> dict[str, Any] | None:
        found = status(kubectl, "modeldeployment", "churn", namespace)
        return found if found.get("candidateVersion") == 1 else None

    waiting = wait_for(held, 60, "version 1 to be held back")
    assert waiting["phase"] == "Pending"
    assert condition(waiting, "Ready")["reason"] == "GateFailed"
    assert "demographicParityDifference of region 0.3 > 0.1" in condition(waiting, "Promoted")["message"]
    assert kubectl.find("deployment", "churn-triton", namespace) is None
