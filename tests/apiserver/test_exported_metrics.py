"""The operator exports every metric of its own the dashboards and alerts query (tests/support/metrics_catalog.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.manifests import example
from tests.support.metrics_catalog import EXPORTED, exposed
from tests.support.operator_process import OperatorProcess
from tests.support.polling import wait_for

pytestmark = pytest.mark.apiserver


def test_the_operator_exports_the_operator_metrics(
    control_plane: ControlPlane, scaleml_installed: Kubectl, namespace: str, tmp_path: Path
) -> None:
    token = control_plane.request_token("scaleml-system", "scaleml-operator")
    operator = OperatorProcess(
        control_plane.kubeconfig_for_token(token, name="metrics-operator"), tmp_path / "operator.log", "--standalone"
    )
    try:
        operator.wait_alive()
        scaleml_installed.apply(example("TrainingJob"), "-n", namespace)

        def inventoried() -> str | None:
            # The alerts count objects by kind and phase.
            text = operator.metrics()
            return text if 'scaleml_operator_objects{kind="TrainingJob",phase=' in text else None

        page = wait_for(inventoried, timeout=30, message="the TrainingJob in the operator's inventory")
    finally:
        operator.stop()
    assert sorted(EXPORTED["operator"] - exposed(page)) == []
