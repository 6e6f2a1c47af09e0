"""Which version a ModelDeployment serves when the TrainingJob that exported it is gone."""

from __future__ import annotations

from typing import Any

import pytest

from scaleml_api.v1alpha1 import TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import MODEL_ANNOTATION, MODEL_VERSION_ANNOTATION, ModelDeploymentSpec
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import Owner
from scaleml_operator.config import OperatorConfig
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile import modeldeployment as serving
from scaleml_operator.reconcile.loop import Context
from tests.support.manifests import example, merged

OWNER = Owner("ModelDeployment", "churn", "ml", "md-uid")
SOURCE = {"metadata": {"name": "churn"}, "spec": {"output": {"volumeClaim": "models", "modelName": "churn"}}}


def _context(deployment: dict[str, Any] | None, exported: set[int]) -> Context:
    indexes: dict[str, Any] = {
        cache.PARENTS[TRAINING_JOB.kind]: {("ml", "churn"): [{**SOURCE, "status": {"modelVersion": 1}}]},
        serving.EXPORTS_INDEX: {("ml", "models", "churn"): exported},
        serving.EVALUATIONS_INDEX: {},
        cache.SERVING_DEPLOYMENTS: {("ml", "churn-triton"): [deployment] if deployment else []},
        cache.SERVING_PODS: {},
    }
    return Context(OperatorConfig(), indexes)


def _deployment(model: str, version: int) -> dict[str, Any]:
    annotations = {MODEL_ANNOTATION: model, MODEL_VERSION_ANNOTATION: str(version)}
    return {"metadata": {"name": "churn-triton", "annotations": annotations}, "spec": {}}


def _served(deployment: dict[str, Any] | None, exported: set[int], **changes: Any) -> int | None:
    spec = ModelDeploymentSpec.model_validate(merged(example("ModelDeployment"), {"spec": changes})["spec"])
    parent = {"metadata": {"name": "churn", "namespace": "ml"}, "status": {}}
    source = serving.read(OWNER, spec, parent, _context(deployment, exported)).source
    assert isinstance(source, build.ModelSource), source
    return source.version


@pytest.mark.parametrize("gates", [None, {"minMetric": 0.5, "requireEvaluation": False}])
def test_the_served_version_stays_when_the_job_that_exported_it_is_gone(gates: dict[str, Any] | None) -> None:
    # Version 2 came from a retraining job whose time to live has run out: only version 1's job is left.
    promotion = {"gates": gates} if gates else {}
    assert _served(_deployment("models/churn", 2), {1}, promotion=promotion) == 2
    # A newer export still rolls it forward.
    assert _served(_deployment("models/churn", 2), {1, 3}, promotion=promotion) == 3


def test_a_version_served_of_another_model_counts_for_nothing() -> None:
    assert _served(_deployment("models/fraud", 7), {1}) == 1
    assert _served(None, {1}) == 1
