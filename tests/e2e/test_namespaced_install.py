"""tests/e2e/test_trainingjob.py again, with the operator installed namespace-scoped: Roles in the namespace it
serves instead of the ClusterRole, and `--namespace` for that namespace only.

The scenario's tests are imported as they are; this module only provides its own ``ml_namespace``: a fresh
namespace, made a served namespace as a platform team does it (manifests/overlays/namespaced/served-namespace
under that namespace), with an operator started for it. The cluster-wide grant is gone meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# The scenario, collected here again with this module's fixtures.
from tests.e2e.test_trainingjob import (  # noqa: F401
    test_a_change_the_running_job_cannot_take_is_explained_and_the_rest_reaches_it,
    test_deleting_the_training_job_removes_every_child,
    test_failing_workers_restart_then_fail_after_the_backoff_limit,
    test_invalid_input_exit_code_fails_at_once_without_retries,
    test_suspend_and_resume,
    test_training_job_gets_its_children_and_succeeds,
    test_ttl_deletes_the_finished_training_job,
)
from tests.support.controlplane import ControlPlane
from tests.support.kubectl import Kubectl
from tests.support.kustomize import BASE, COMPONENTS, MANIFESTS, OVERLAYS, overlay
from tests.support.operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

OPERATOR = "system:serviceaccount:scaleml-system:scaleml-operator"


@pytest.fixture(scope="module")
def namespace_scoped(
    cluster: ControlPlane, scaleml_installed: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kubectl]:
    """The install made namespace-scoped (components/namespace-scoped); the cluster-wide one again after."""
    kubectl = scaleml_installed
    directory = overlay(tmp_path_factory.mktemp("namespace-scoped"), [BASE], [COMPONENTS / "namespace-scoped"])
    kubectl.run("apply", "--server-side", "-k", str(directory))
    # Server-side apply prunes nothing: the cluster-wide grant goes by hand, as when switching an install.
    kubectl.run("delete", "clusterrolebinding,clusterrole", "scaleml-operator")
    yield kubectl
    kubectl.run("apply", "--server-side", "-k", str(MANIFESTS))
    kubectl.run("delete", "clusterrolebinding,clusterrole", "scaleml-operator-cluster", "--ignore-not-found")


@pytest.fixture
def ml_namespace(
    cluster: ControlPlane,
    namespace_scoped: Kubectl,
    claims_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """A restricted namespace with the example's claims, served by a namespace-scoped operator of its own."""
    kubectl, namespace = namespace_scoped, claims_namespace
    served = overlay(tmp_path_factory.mktemp("served"), [OVERLAYS / "namespaced" / "served-namespace"])
    (served / "kustomization.yaml").write_text(
        f"namespace: {namespace}\n" + (served / "kustomization.yaml").read_text()
    )
    kubectl.run("apply", "--server-side", "-k", str(served))
    assert (
        kubectl.run("auth", "can-i", "create", "jobs.batch", "-A", f"--as={OPERATOR}", check=False).stdout.strip()
        == "no"
    )
    token = cluster.request_token("scaleml-system", "scaleml-operator")
    process = OperatorProcess(
        cluster.kubeconfig_for_token(token, name="namespaced-operator"),
        tmp_path_factory.mktemp("operator") / "operator.log",
        "--standalone",
        f"--namespace={namespace}",
    )
    try:
        process.wait_alive()
        yield namespace
    finally:
        process.stop()
    output = process.output()
    assert f'User "{OPERATOR}" cannot' not in output
    assert "ValidatingAdmissionPolicy 'scaleml-operator'" not in output
