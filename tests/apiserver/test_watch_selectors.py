"""The operator's watches of Jobs, Deployments and Pods ask the API server for its own objects only.

The operator runs as its ServiceAccount, as installed, through a loopback proxy that records each request
on its way to the API server: the URLs the API server was sent are what is checked, not the settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.apiproxy import RecordedRequest, recording_proxy
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.operator_process import OperatorProcess
from tests.support.polling import wait_for

pytestmark = pytest.mark.apiserver

# Collection paths (cluster-wide; a namespace-scoped operator adds /namespaces/<ns>) and the selector each
# watch must carry: written out here, not taken from the operator's settings, so that a change to those
# shows up as a failure to look at.
MANAGED = "app.kubernetes.io/managed-by=scaleml-operator"
EXPECTED = {
    ("/apis/batch/v1", "jobs"): f"{MANAGED},app.kubernetes.io/name=scaleml-trainer",
    ("/apis/apps/v1", "deployments"): f"{MANAGED},app.kubernetes.io/name in (scaleml-monitor,scaleml-triton)",
    ("/api/v1", "pods"): f"{MANAGED},app.kubernetes.io/name in (scaleml-trainer,scaleml-triton)",
}


def _kind(request: RecordedRequest) -> tuple[str, str] | None:
    """The watched kind of a request for a whole collection (list or watch), cluster-wide or namespaced."""
    for prefix, plural in EXPECTED:
        if request.path == f"{prefix}/{plural}":
            return prefix, plural
        parts = request.path.removeprefix(prefix + "/").split("/")
        if request.path.startswith(prefix + "/namespaces/") and len(parts) == 3 and parts[2] == plural:
            return prefix, plural
    return None


def test_the_operators_watches_carry_label_selectors(
    control_plane: ControlPlane, scaleml_installed: Kubectl, tmp_path: Path
) -> None:
    token = control_plane.request_token("scaleml-system", "scaleml-operator")
    with recording_proxy(control_plane.server, control_plane.ca_file) as proxy:
        kubeconfig = proxy.kubeconfig(tmp_path / "proxied.kubeconfig", token)
        operator = OperatorProcess(kubeconfig, tmp_path / "operator.log", "--standalone")
        try:
            operator.wait_alive()

            def watching() -> bool:
                watched = [request for request in proxy.requests() if request.watch]
                own = any(request.path == "/apis/scaleml.dev/v1alpha1/trainingjobs" for request in watched)
                return own and set(EXPECTED) <= {_kind(request) for request in watched}

            wait_for(watching, 60, "the operator's watches of TrainingJobs, Jobs, Deployments and Pods")
        finally:
            operator.stop()
    requests = proxy.requests()
    collection = [(r, kind) for r in requests if r.method == "GET" and (kind := _kind(r)) is not None]
    watches = [(r, kind) for r, kind in collection if r.watch]
    assert {kind for _, kind in watches} == set(EXPECTED)
    unselected = [
        f"{r.path}?labelSelector={r.label_selector}" for r, kind in watches if r.label_selector != EXPECTED[kind]
    ]
    assert unselected == []
    # kopf lists each kind before it watches it, with the same selector; the reconcile's own lists (of one
    # object's pods) name the operator's label too. Nothing asks for every Job, Deployment or Pod.
    unlabelled = [r.path for r, _ in collection if MANAGED not in (r.label_selector or "")]
    assert unlabelled == []
    assert 'User "system:serviceaccount:scaleml-system:scaleml-operator" cannot' not in operator.output()
