"""The CRDs on a real kube-apiserver: what users see with kubectl."""

from __future__ import annotations

import pytest

from tests.support.invalid_specs import CASES, InvalidCase
from tests.support.kubectl import Kubectl
from tests.support.manifests import EXAMPLES, example, merged

pytestmark = pytest.mark.apiserver


def test_examples_apply_and_come_back_with_defaults(scaleml_installed: Kubectl, namespace: str) -> None:
    scaleml_installed.run("apply", "-n", namespace, "-f", str(EXAMPLES))
    job = scaleml_installed.get("trainingjob", "churn", namespace)
    # Defaults of sections the example leaves out, filled in by the API server.
    assert job["spec"]["model"]["entrypoint"] == ""
    assert job["spec"]["scheduling"]["priorityClassName"] == ""
    assert job["spec"]["runPolicy"]["suspend"] is False
    assert "procsPerWorker" not in job["spec"]["resources"]
    digits = scaleml_installed.get("tj", "digits", namespace)
    assert digits["spec"]["hyperparameters"]["scheduler"] == "cosine"
    assert digits["spec"]["output"]["formats"] == ["torchscript"]
    assert "elastic" not in digits["spec"]
    monitor = scaleml_installed.get("dm", "churn", namespace)
    assert monitor["spec"]["thresholds"]["js"] == 0.1


def test_sections_that_change_only_what_is_set_come_back_as_written(scaleml_installed: Kubectl, namespace: str) -> None:
    # A default inside these would change what the user left alone: an unasked-for fairness gate,
    # or a retraining job's data checks reset from the source job's.
    gated = merged(example("ModelDeployment"), {"spec": {"promotion": {"gates": {"minMetric": 0.8}}}})
    overridden = merged(
        example("DriftMonitor"),
        {"spec": {"retrain": {"trainingJobOverrides": {"data": {"checks": {"minRows": 500}}}}}},
    )
    for manifest in (gated, overridden):
        scaleml_installed.apply(manifest, "-n", namespace)
    gates = scaleml_installed.get("md", "churn", namespace)["spec"]["promotion"]["gates"]
    assert "maxGroupGap" not in gates, gates
    overrides = scaleml_installed.get("dm", "churn", namespace)["spec"]["retrain"]["trainingJobOverrides"]
    assert overrides["data"] == {"checks": {"minRows": 500}}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.kind}-{c.id}")
def test_invalid_manifest_is_rejected_naming_the_field(
    case: InvalidCase, scaleml_installed: Kubectl, namespace: str
) -> None:
    result = scaleml_installed.apply(case.manifest(), "-n", namespace, "--dry-run=server", check=False)
    assert result.returncode != 0, f"accepted: {case.manifest()}"
    assert case.field in result.stderr, result.stderr


def test_explain_shows_the_field_descriptions(scaleml_installed: Kubectl) -> None:
    out = scaleml_installed.run("explain", "trainingjob.spec.resources").stdout
    assert "Pods, processes and their resources." in out
    assert "workers\t<integer>" in out
    assert "Pods (nodes) in the torch.distributed group." in out
    assert "gpusPerWorker" in out


def test_get_scaleml_lists_all_three_kinds_with_their_columns(scaleml_installed: Kubectl, namespace: str) -> None:
    scaleml_installed.run("apply", "-n", namespace, "-f", str(EXAMPLES))
    out = scaleml_installed.run("get", "scaleml", "-n", namespace).stdout
    for name in (
        "trainingjob.scaleml.dev/churn",
        "modeldeployment.scaleml.dev/churn",
        "driftmonitor.scaleml.dev/churn",
    ):
        assert name in out
    headers = [line.split() for line in out.splitlines() if line.startswith("NAME")]
    assert ["NAME", "PHASE", "WORKERS", "EPOCH", "STEP", "TOTAL", "LOSS", "VERSION", "AGE"] in headers
    assert ["NAME", "PHASE", "MODEL", "SERVED", "HELD", "READY", "REPLICAS", "AGE"] in headers
    assert ["NAME", "TARGET", "DRIFT", "SCORE", "RETRAINS", "LAST-CHECK", "AGE"] in headers


def test_kubectl_scale_sets_replicas_of_a_model_deployment(scaleml_installed: Kubectl, namespace: str) -> None:
    fixed = example("ModelDeployment")
    del fixed["spec"]["autoscaling"]
    scaleml_installed.apply(fixed, "-n", namespace)
    scaleml_installed.run("scale", "-n", namespace, "md/churn", "--replicas=3")
    assert scaleml_installed.get("md", "churn", namespace)["spec"]["replicas"] == 3
