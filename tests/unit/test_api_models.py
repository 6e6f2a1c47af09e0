from __future__ import annotations

from typing import Any

import pytest

from scaleml_api.v1alpha1 import KINDS, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_api.validation import InvalidSpecError, parse_spec
from tests.support.invalid_specs import CASES, InvalidCase
from tests.support.manifests import example, merged

KIND_BY_NAME = {kind.kind: kind for kind in KINDS}
SPEC_CASES = [case for case in CASES if case.field.startswith("spec")]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_example_is_a_valid_spec(kind: Any) -> None:
    parse_spec(kind, example(kind.kind)["spec"])


@pytest.mark.parametrize("case", SPEC_CASES, ids=lambda c: f"{c.kind}-{c.id}")
def test_models_reject_what_the_api_server_rejects(case: InvalidCase) -> None:
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(KIND_BY_NAME[case.kind], case.manifest()["spec"])
    assert f"{case.field}:" in str(error.value)


def test_defaults_fill_an_almost_empty_training_job() -> None:
    spec = TrainingJobSpec.model_validate(
        {
            "data": {"source": "d.csv", "volumeClaim": "data", "target": "y"},
            "output": {"volumeClaim": "m", "modelName": "m"},
        }
    )
    assert spec.resources.workers == 1
    assert spec.resources.processes_per_worker == 1
    assert spec.hyperparameters.optimizer == "adamw"
    assert spec.output.formats == ["torchscript"]
    assert spec.elastic is None
    assert spec.checkpoint is None


def test_processes_per_worker_follows_gpus() -> None:
    spec = parse_spec(
        TRAINING_JOB, merged(example("TrainingJob"), {"spec": {"resources": {"gpusPerWorker": 4}}})["spec"]
    )
    assert isinstance(spec, TrainingJobSpec)
    assert spec.resources.processes_per_worker == 4


def test_quantities_accept_numbers_as_kubernetes_does() -> None:
    spec = parse_spec(TRAINING_JOB, merged(example("TrainingJob"), {"spec": {"resources": {"cpu": 4}}})["spec"])
    assert isinstance(spec, TrainingJobSpec)
    assert spec.resources.cpu == "4"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"hiddenSizes": "big"}, "spec.model.params.hiddenSizes"),
        ({"hiddenSizes": [64, 0]}, "hiddenSizes must each be between 1 and 65536"),
        ({"dropuot": 0.1}, "spec.model.params.dropuot"),
    ],
)
def test_architecture_parameters_are_checked_with_their_names(params: dict[str, Any], named: str) -> None:
    manifest = merged(example("TrainingJob"), {"spec": {"model": {"params": params}}})
    manifest["spec"]["model"]["params"] = params
    with pytest.raises(InvalidSpecError, match=named.replace(".", r"\.")):
        parse_spec(TRAINING_JOB, manifest["spec"])


def test_transformer_width_must_split_across_heads() -> None:
    manifest = merged(
        example("TrainingJob"),
        {"spec": {"model": {"architecture": "transformer"}}},
    )
    manifest["spec"]["model"]["params"] = {"dModel": 100, "heads": 3}
    with pytest.raises(InvalidSpecError, match=r"dModel \(100\) must be divisible by heads \(3\)"):
        parse_spec(TRAINING_JOB, manifest["spec"])


def test_custom_parameters_pass_through_untouched() -> None:
    manifest = merged(
        example("TrainingJob"),
        {"spec": {"model": {"architecture": "custom", "entrypoint": "mypkg.nets:build", "params": {"anything": [1]}}}},
    )
    manifest["spec"]["model"]["params"] = {"anything": [1]}
    parse_spec(TRAINING_JOB, manifest["spec"])


@pytest.mark.parametrize("version", ["latest", 1, 12])
def test_model_version_is_latest_or_a_positive_number(version: int | str) -> None:
    parse_spec(MODEL_DEPLOYMENT, merged(example("ModelDeployment"), {"spec": {"model": {"version": version}}})["spec"])


def test_several_problems_are_reported_together() -> None:
    manifest = merged(example("TrainingJob"), {"spec": {"precision": "fp8", "resources": {"workers": 0}}})
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(TRAINING_JOB, manifest["spec"])
    assert "spec.precision" in str(error.value)
    assert "spec.resources.workers" in str(error.value)


@pytest.mark.parametrize(
    "key",
    [
        "n" * 63,
        "example.com/" + "n" * 63,
        "a" * 63 + ("." + "b" * 63) * 2 + "." + "c" * 61 + "/Name_1.x",
        "kubernetes.io/hostname",
    ],
    ids=["name-of-63", "prefixed-name-of-63", "prefix-of-253", "well-known"],
)
def test_keys_at_kubernetes_limits_are_accepted_everywhere(key: str) -> None:
    changes = {
        "scheduling": {"nodeSelector": {key: "x"}, "tolerations": [{"key": key, "operator": "Exists"}]},
        "podMetadata": {"labels": {key: "x"}, "annotations": {key: "x"}},
    }
    spec = parse_spec(TRAINING_JOB, merged(example("TrainingJob"), {"spec": changes})["spec"])
    assert isinstance(spec, TrainingJobSpec)
    assert key in spec.scheduling.node_selector
    assert spec.scheduling.tolerations[0].key == key


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("n" * 64, "name of 64"),
        ("example.com/" + "n" * 64, "prefixed name of 64"),
        ("a" * 63 + ("." + "b" * 63) * 2 + "." + "c" * 62 + "/x", "prefix of 254"),
        ("Example.com/x", "prefix not a DNS subdomain"),
        ("a/b/c", "two slashes"),
        ("/x", "empty prefix"),
        ("x/", "empty name"),
    ],
)
def test_label_keys_beyond_kubernetes_limits_are_refused_naming_the_map(key: str, why: str) -> None:
    manifest = merged(example("TrainingJob"), {"spec": {"podMetadata": {"labels": {key: "x"}}}})
    with pytest.raises(InvalidSpecError, match=r"spec\.podMetadata\.labels: key .* is not a qualified name"):
        parse_spec(TRAINING_JOB, manifest["spec"])
