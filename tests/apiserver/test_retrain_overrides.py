"""A user who may only edit DriftMonitors cannot, through retraining, get a pod that differs from the source job's.

The retraining TrainingJob is created with the operator's rights; what the DriftMonitor may change
of it is an allow-list that the API server enforces, so each attempt is refused at admission and
the refusal names the field. Against a real kube-apiserver, as that user (impersonated).
"""

from __future__ import annotations

import pytest

from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.retrain_overrides import FORBIDDEN_OVERRIDES

pytestmark = pytest.mark.apiserver

TENANT = "drift-watcher"


@pytest.fixture
def monitors_only(scaleml_installed: Kubectl, namespace: str) -> str:
    """A user bound to a Role that allows DriftMonitors and nothing else, in `namespace`."""
    scaleml_installed.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "driftmonitor-editor"},
            "rules": [
                {
                    "apiGroups": ["scaleml.dev"],
                    "resources": ["driftmonitors"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
                }
            ],
        },
        "-n",
        namespace,
    )
    binding = ("rolebinding", "driftmonitor-editor", "--role=driftmonitor-editor", f"--user={TENANT}")
    scaleml_installed.run("create", *binding, "-n", namespace)
    return TENANT


def _monitor(overrides: dict[str, object]) -> dict[str, object]:
    return merged(example("DriftMonitor"), {"spec": {"retrain": {"trainingJobOverrides": overrides}}})


def test_the_user_may_edit_monitors_but_not_create_training_jobs(
    scaleml_installed: Kubectl, namespace: str, monitors_only: str
) -> None:
    def can(verb: str, resource: str) -> str:
        return scaleml_installed.run(
            "auth", "can-i", verb, resource, "-n", namespace, f"--as={monitors_only}", check=False
        ).stdout.strip()

    assert can("create", "driftmonitors.scaleml.dev") == "yes"
    assert can("create", "trainingjobs.scaleml.dev") == "no"
    # New hyperparameters and a new data file on the source job's claim: that is what retraining is for.
    allowed = _monitor({"hyperparameters": {"learningRate": 0.01}, "data": {"source": "/churn/2026-12.parquet"}})
    scaleml_installed.apply(allowed, "-n", namespace, f"--as={monitors_only}", "--dry-run=server")


@pytest.mark.parametrize("field", FORBIDDEN_OVERRIDES)
def test_an_override_outside_the_allow_list_is_refused_at_admission_naming_the_field(
    field: str, scaleml_installed: Kubectl, namespace: str, monitors_only: str
) -> None:
    result = scaleml_installed.apply(
        _monitor(FORBIDDEN_OVERRIDES[field]), "-n", namespace, f"--as={monitors_only}", "--dry-run=server", check=False
    )
    assert result.returncode != 0, f"accepted trainingJobOverrides.{field}"
    assert f"spec.retrain.trainingJobOverrides.{field}" in result.stderr, result.stderr
