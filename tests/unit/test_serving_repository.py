"""The Triton configuration a ModelDeployment renders, and the repository the model agent builds."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format  # type: ignore[import-untyped]
from pydantic import ValidationError
from tritonclient.grpc.model_config_pb2 import ModelConfig

from scaleml_api.card import CardTensors
from scaleml_api.profile import TensorSpec
from scaleml_api.runtime import ServingRun
from scaleml_api.v1alpha1.modeldeployment import Explain, ModelDeploymentSpec
from scaleml_workloads.serving.agent import NotServableError, sync
from scaleml_workloads.serving.config import deployment_config

INPUTS = [TensorSpec(name="INPUT__0", data_type="TYPE_FP32", dims=[5])]
OUTPUTS = [TensorSpec(name="OUTPUT__0", data_type="TYPE_FP32", dims=[2])]


def _spec(**fields: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": {"fromTrainingJob": "churn"}, **fields})


def _render(spec: ModelDeploymentSpec, version: int | None = None) -> str:
    return deployment_config(spec, "churn", INPUTS, OUTPUTS, version).render()


def test_each_backend_gets_its_platform_and_model_file() -> None:
    assert 'platform: "pytorch_libtorch"' in _render(_spec())
    assert 'default_model_filename: "model.pt"' in _render(_spec())
    assert 'platform: "onnxruntime_onnx"' in _render(_spec(backend="onnx"))
    assert 'default_model_filename: "model.onnx"' in _render(_spec(backend="onnx"))
    assert 'backend: "python"' in _render(_spec(backend="python"))
    assert "platform" not in _render(_spec(backend="python"))


def test_batching_instances_and_version_policy_follow_the_spec() -> None:
    config = _render(
        _spec(
            batching={"maxBatchSize": 32, "preferredBatchSizes": [8, 16], "maxQueueDelayMicroseconds": 300},
            instances={"count": 3},
            resources={"gpus": 1},
        ),
        version=4,
    )

    assert "max_batch_size: 32" in config
    assert "dynamic_batching { preferred_batch_size: [ 8, 16 ] max_queue_delay_microseconds: 300 }" in config
    assert "instance_group [ { count: 3, kind: KIND_GPU } ]" in config
    assert "version_policy: { specific: { versions: [ 4 ] } }" in config
    assert 'input [\n  { name: "INPUT__0", data_type: TYPE_FP32, dims: [ 5 ] }\n]' in config


def test_instances_run_on_cpu_without_gpus_or_when_asked() -> None:
    assert "kind: KIND_CPU" in _render(_spec())
    assert "kind: KIND_CPU" in _render(_spec(resources={"gpus": 2}, instances={"kind": "cpu"}))
    assert "version_policy: { latest: { num_versions: 1 } }" in _render(_spec())


def test_batching_off_has_no_dynamic_batcher() -> None:
    config = _render(_spec(batching={"maxBatchSize": 0}))

    assert "max_batch_size: 0" in config
    assert "dynamic_batching" not in config


def _export(source: Path, version: int, card: Path) -> None:
    directory = source / str(version)
    directory.mkdir(parents=True)
    (directory / "model.pt").write_bytes(b"torchscript")
    shutil.copy(card, directory / "model_card.json")


@pytest.fixture
def card_file(tmp_path: Path) -> Path:
    """The part of a model card the agent reads."""
    path = tmp_path / "card.json"
    path.write_text(CardTensors(inputs=INPUTS, outputs=OUTPUTS).model_dump_json(by_alias=True))
    return path


def _run(tmp_path: Path, version: int | None = None) -> ServingRun:
    return ServingRun(
        namespace="ml",
        name="churn",
        spec=_spec(),
        model_name="churn",
        source_dir=str(tmp_path / "source"),
        serving_dir=str(tmp_path / "serving"),
        version=version,
    )


def test_nothing_is_served_before_a_version_exists(tmp_path: Path) -> None:
    assert sync(_run(tmp_path)) is None
    assert not (tmp_path / "serving" / "churn").exists()


def test_the_newest_version_is_linked_and_older_links_stay(tmp_path: Path, card_file: Path) -> None:
    source = tmp_path / "source"
    _export(source, 1, card_file)
    run = _run(tmp_path)

    assert sync(run) == 1
    _export(source, 2, card_file)
    assert sync(run) == 2

    model = tmp_path / "serving" / "churn"
    assert sorted(entry.name for entry in model.iterdir()) == ["1", "2", "config.pbtxt"]
    assert (model / "2").resolve() == (source / "2").resolve()
    assert "latest: { num_versions: 1 }" in (model / "config.pbtxt").read_text()


def test_a_pinned_version_waits_for_its_export_and_is_kept(tmp_path: Path, card_file: Path) -> None:
    source = tmp_path / "source"
    _export(source, 1, card_file)
    run = _run(tmp_path, version=2)

    assert sync(run) is None
    _export(source, 2, card_file)
    _export(source, 3, card_file)

    assert sync(run) == 2
    model = tmp_path / "serving" / "churn"
    assert sorted(entry.name for entry in model.iterdir()) == ["2", "config.pbtxt"]
    assert "specific: { versions: [ 2 ] }" in (model / "config.pbtxt").read_text()


def test_up_to_follows_the_newest_version_the_gates_allow(tmp_path: Path, card_file: Path) -> None:
    source = tmp_path / "source"
    for version in (1, 2, 3):
        _export(source, version, card_file)
    run = _run(tmp_path).model_copy(update={"up_to": 2})

    assert sync(run) == 2
    assert sync(run.model_copy(update={"up_to": 3})) == 3
    model = tmp_path / "serving" / "churn"
    assert sorted(entry.name for entry in model.iterdir()) == ["2", "3", "config.pbtxt"]
    # Followed in place, as without gates: Triton loads the new link and then lets the old one go.
    assert "latest: { num_versions: 1 }" in (model / "config.pbtxt").read_text()
    # Unset, it is left out of the pods' config, whose template hash stays as it was.
    assert "upTo" not in _run(tmp_path).model_dump_json(by_alias=True)


def test_with_explanations_the_explanation_model_is_served_beside_the_model(tmp_path: Path, card_file: Path) -> None:
    source = tmp_path / "source"
    _export(source, 1, card_file)
    explain = source / "1" / "explain"
    explain.mkdir()
    (explain / "model.pt").write_bytes(b"torchscript")
    _export(source, 2, card_file)  # exported without one: served alone
    spec = _spec().model_copy(update={"explain": Explain(enabled=True)})
    run = _run(tmp_path, version=1).model_copy(update={"spec": spec})

    assert sync(run) == 1
    explainer = tmp_path / "serving" / "churn-explain"
    assert (explainer / "1").resolve() == explain.resolve()
    config = (explainer / "config.pbtxt").read_text()
    assert 'name: "churn-explain"' in config
    assert '{ name: "ATTRIBUTIONS", data_type: TYPE_FP32, dims: [ 5 ] }' in config
    assert 'parameters { key: "INFERENCE_MODE", value: { string_value: "false" } }' in config
    assert sync(run.model_copy(update={"version": 2})) == 2
    assert sorted(entry.name for entry in explainer.iterdir()) == ["1", "config.pbtxt"]


def test_the_config_is_rewritten_only_when_it_changes(tmp_path: Path, card_file: Path) -> None:
    _export(tmp_path / "source", 1, card_file)
    run = _run(tmp_path)
    sync(run)
    config = tmp_path / "serving" / "churn" / "config.pbtxt"
    config.touch()
    before = config.stat().st_mtime_ns
    inode = config.stat().st_ino

    sync(run)

    assert (config.stat().st_mtime_ns, config.stat().st_ino) == (before, inode)


def test_a_version_removed_from_the_volume_is_unlinked(tmp_path: Path, card_file: Path) -> None:
    source = tmp_path / "source"
    _export(source, 1, card_file)
    _export(source, 2, card_file)
    run = _run(tmp_path)
    sync(run)
    (tmp_path / "serving" / "churn" / "1").symlink_to(source / "1")

    shutil.rmtree(source / "1")
    sync(run)

    assert sorted(entry.name for entry in (tmp_path / "serving" / "churn").iterdir()) == ["2", "config.pbtxt"]


def test_a_version_without_the_backends_file_or_card_is_not_servable(tmp_path: Path, card_file: Path) -> None:
    source = tmp_path / "source"
    _export(source, 1, card_file)
    onnx = _run(tmp_path).model_copy(update={"spec": _spec(backend="onnx")})
    with pytest.raises(NotServableError, match=r"has no model\.onnx, which the onnx backend loads"):
        sync(onnx)

    (source / "1" / "model_card.json").write_text("{")
    with pytest.raises(NotServableError, match=r"model_card\.json is missing or unreadable"):
        sync(_run(tmp_path))


def test_a_tensor_name_that_is_not_an_identifier_is_refused_with_the_model_card() -> None:
    with pytest.raises(ValidationError, match="name"):
        TensorSpec(name='x" } instance_group [ { kind: KIND_GPU', data_type="TYPE_FP32", dims=[5])


@pytest.mark.parametrize("name", ['churn" } instance_group [ { count: 64 } ] #', "tab\tnew\nline", "ünï\\", "a'b"])
def test_whatever_a_string_holds_it_stays_one_string_in_the_config(name: str) -> None:
    # Protobuf's own text-format parser, on Triton's own ModelConfig message.
    parsed = text_format.Parse(deployment_config(_spec(), name, INPUTS, OUTPUTS, None).render(), ModelConfig())
    assert parsed.name == name
    assert len(parsed.instance_group) == 1
    assert [tensor.name for tensor in parsed.input] == ["INPUT__0"]


@pytest.mark.parametrize("backend", ["python", "pytorch", "onnx"])
def test_only_a_python_backend_model_is_told_to_write_its_capture_traces(backend: str) -> None:
    spec = _spec(backend=backend, capture={"enabled": True, "volumeClaim": "captures", "sampleRate": 0.25})
    text = deployment_config(spec, "churn", INPUTS, OUTPUTS, None, "/traces").render()
    parameters = {key: value.string_value for key, value in text_format.Parse(text, ModelConfig()).parameters.items()}

    # The other backends are traced by Triton itself (runtime.trace_options).
    expected = {"scaleml_capture_rate": "4", "scaleml_traces_dir": "/traces"} if backend == "python" else {}
    assert parameters == expected
    assert "parameters" not in _render(_spec(backend=backend))
