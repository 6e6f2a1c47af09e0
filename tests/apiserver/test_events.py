"""Events against the real API server: posted as written, and told in the operator's log one line each."""

from __future__ import annotations

import json
import logging

import pytest

from scaleml_operator.kube import events
from scaleml_operator.status.conditions import Event
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl

pytestmark = pytest.mark.apiserver


def test_a_message_with_line_breaks_is_posted_whole_and_logged_on_one_line(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    # A worker's termination message is the workload's own text, so its author picks the line breaks.
    forged = "2026-01-01 00:00:00,000 INFO [scaleml_operator.kube.events] TrainingJob team-b/fraud: TrainingSucceeded"
    message = f"exit code 2: bad column\n{forged}"
    involved = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "churn", "namespace": namespace, "uid": "5e1f-uid"},
    }
    with caplog.at_level(logging.INFO, logger=events.log.name):
        events.post(involved, [Event("Warning", "TrainingFailed", message)])

    (logged,) = [record.getMessage() for record in caplog.records if "TrainingFailed" in record.getMessage()]
    assert "\n" not in logged
    assert "bad column\\n2026-01-01" in logged
    (posted,) = json.loads(kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert posted["message"] == message
