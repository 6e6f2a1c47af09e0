"""The CRDs on a real kube-apiserver: what users see with kubectl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaleml_api.base import API_VERSION
from scaleml_local.demo.scenario import MANIFESTS
from tests.support.docs import example_objects
from tests.support.invalid_specs import CASES, InvalidCase
from tests.support.kubectl import Kubectl
from tests.support.manifests import EXAMPLES, ROOT, Manifest, example, load_all, merged

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


def _shipped_objects() -> Iterator[tuple[str, Manifest]]:
    """Every ScaleML object the repository ships: the examples, local mode's demo and the docs' examples."""
    for path in (*sorted(EXAMPLES.glob("*.yaml")), *sorted(Path(str(MANIFESTS)).glob("*.yaml"))):
        for document in load_all(path):
            if document["apiVersion"] == API_VERSION:
                yield f"{path.relative_to(ROOT)}: {document['metadata']['name']}", document
    for path, line, document in example_objects():
        yield f"{path.relative_to(ROOT)}:{line}", document


def test_every_shipped_object_is_accepted(scaleml_installed: Kubectl, namespace: str) -> None:
    refused = []
    for where, document in _shipped_objects():
        manifest = merged(document, {"metadata": {"namespace": None}})
        result = scaleml_installed.apply(manifest, "-n", namespace, "--dry-run=server", check=False)
        if result.returncode:
            refused.append(f"{where}: {result.stderr}")
    assert refused == []


def _training_job_with_extra_params(value: str) -> str:
    """The example TrainingJob with model.params.extra set to the JSON text `value`, as JSON text."""
    job = example("TrainingJob")
    job["spec"]["model"]["params"]["extra"] = "@@"
    return json.dumps(job).replace('"@@"', value)


@pytest.mark.parametrize(
    "value",
    [
        # Nested as deep as the API server stores anything (it refuses 10,000 levels in all).
        '{"a":' * 9_990 + "1" + "}" * 9_990,
        # 1.4 MB: fifty of these once took the operator past its memory limit.
        json.dumps([0] * 700_000),
        json.dumps("x" * 1_000_000),
    ],
    ids=["nested-9990-levels", "list-of-700000", "string-of-1000000"],
)
def test_deep_or_large_model_params_are_refused_naming_the_field(
    value: str, scaleml_installed: Kubectl, namespace: str
) -> None:
    result = scaleml_installed.run(
        "create", "-n", namespace, "-f", "-", stdin=_training_job_with_extra_params(value), check=False
    )
    assert result.returncode != 0
    assert "spec.model.params.extra" in result.stderr, result.stderr[:2000]


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
