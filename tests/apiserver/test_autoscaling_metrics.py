"""A ModelDeployment's autoscaling metrics on the real API server: what its CRD takes, the HPA takes too."""

from __future__ import annotations

import pytest

from scaleml_api.v1alpha1 import MODEL_DEPLOYMENT
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.validation import parse_spec
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import Owner
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.metric_specs import VALID_METRICS, meaning

pytestmark = pytest.mark.apiserver


def test_every_metric_the_crd_accepts_makes_an_hpa_the_api_server_accepts(
    scaleml_installed: Kubectl, namespace: str
) -> None:
    model_deployment = merged(example("ModelDeployment"), {"spec": {"autoscaling": {"metrics": list(VALID_METRICS)}}})
    scaleml_installed.apply(model_deployment, "-n", namespace)
    stored = scaleml_installed.get("md", "churn", namespace)
    spec = parse_spec(MODEL_DEPLOYMENT, stored["spec"])
    assert isinstance(spec, ModelDeploymentSpec)

    owner = Owner("ModelDeployment", "churn", namespace, stored["metadata"]["uid"])
    autoscaler = build.autoscaler(owner, spec)
    assert autoscaler is not None
    # Created for real, not a dry run: the API server validates, defaults and stores it.
    scaleml_installed.apply(autoscaler, "-n", namespace)

    hpa = scaleml_installed.get("hpa", "churn", namespace)
    cpu, *extra = hpa["spec"]["metrics"]
    assert cpu["resource"]["name"] == "cpu"
    assert [meaning(metric) for metric in extra] == [meaning(metric) for metric in VALID_METRICS]
