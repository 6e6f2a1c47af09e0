from __future__ import annotations

from typing import Any

import pytest

from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import DRIFT_MONITOR, KINDS, MODEL_DEPLOYMENT, TRAINING_JOB
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
    ("changes", "named"),
    [
        ({"resources": {"workers": "2"}}, "spec.resources.workers: Input should be a valid integer"),
        ({"runPolicy": {"suspend": "true"}}, "spec.runPolicy.suspend: Input should be a valid boolean"),
        ({"hyperparameters": {"learningRate": "0.01"}}, "spec.hyperparameters.learningRate: Input should be a valid"),
        ({"resources": {"workers": True}}, "spec.resources.workers: Input should be a valid integer"),
        ({"resources": {"workers": 2.5}}, "spec.resources.workers: Input should be a valid integer"),
        # The CRD's int-or-string takes a whole number or a string: a fraction must be a string ("0.5", "500m").
        ({"resources": {"cpu": 0.5}}, "spec.resources.cpu: Input should be a valid string"),
        ({"resources": {"cpu": -1}}, "spec.resources.cpu: must be a quantity of at least 0 and below 2^63"),
        ({"checkpoint": {"volumeClaim": "c", "everySteps": 2**63}}, "spec.checkpoint.everySteps: Input should be"),
    ],
)
def test_values_are_taken_with_the_types_the_crd_gives_them(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(TRAINING_JOB, merged(example("TrainingJob"), {"spec": changes})["spec"])
    assert named in str(error.value)


def test_whole_numbers_are_integers_however_they_are_written() -> None:
    changes = {"resources": {"workers": 2.0, "cpu": 2.0}, "hyperparameters": {"epochs": 1e3}}
    spec = parse_spec(TRAINING_JOB, merged(example("TrainingJob"), {"spec": changes})["spec"])
    assert isinstance(spec, TrainingJobSpec)
    assert (spec.resources.workers, spec.resources.cpu, spec.hyperparameters.epochs) == (2, "2", 1000)


@pytest.mark.parametrize("version", [2.5, True, [1]])
def test_model_version_is_a_whole_number_or_a_string(version: Any) -> None:
    spec = merged(example("ModelDeployment"), {"spec": {}})["spec"]
    spec["model"]["version"] = version
    with pytest.raises(InvalidSpecError, match=r"^spec\.model\.version: must be an integer or a string$"):
        parse_spec(MODEL_DEPLOYMENT, spec)


def test_nulls_are_dropped_from_objects_as_the_api_server_drops_them() -> None:
    spec = example("TrainingJob")["spec"]
    spec["resources"] = None
    spec["elastic"] = None
    spec["env"] = [{"name": "A", "value": None}]
    spec["scheduling"]["nodeSelector"] = {"pool": None}
    spec["model"]["params"]["dropout"] = None
    parsed = parse_spec(TRAINING_JOB, spec)
    assert isinstance(parsed, TrainingJobSpec)
    assert (parsed.resources.workers, parsed.elastic, parsed.env[0].value) == (1, None, "")
    assert parsed.scheduling.node_selector == {}
    assert "dropout" not in parsed.model.params


def test_a_null_in_a_list_is_refused_naming_its_index() -> None:
    spec = example("TrainingJob")["spec"]
    spec["data"]["features"] = ["age", None]
    with pytest.raises(InvalidSpecError, match=r"spec\.data\.features\[1\]: Input should be a valid string"):
        parse_spec(TRAINING_JOB, spec)


@pytest.mark.parametrize(
    ("kind", "changes", "named"),
    [
        (
            TRAINING_JOB,
            {"env": [{"name": "A"}, {"name": "B"}, {"name": "A", "value": "x"}]},
            'spec.env[2]: Duplicate value: {"name":"A"}',
        ),
        (TRAINING_JOB, {"data": {"features": ["age", "age"]}}, 'spec.data.features[1]: Duplicate value: "age"'),
        (TRAINING_JOB, {"output": {"formats": ["onnx", "onnx"]}}, 'spec.output.formats[1]: Duplicate value: "onnx"'),
        (
            MODEL_DEPLOYMENT,
            {"batching": {"preferredBatchSizes": [16, 16]}},
            "spec.batching.preferredBatchSizes[1]: Duplicate value: 16",
        ),
        (DRIFT_MONITOR, {"features": ["a", "b", "a"]}, 'spec.features[2]: Duplicate value: "a"'),
    ],
)
def test_list_sets_and_maps_refuse_a_duplicate_naming_its_index(
    kind: AnyKind, changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(kind, merged(example(kind.kind), {"spec": changes})["spec"])
    assert named in str(error.value)


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
