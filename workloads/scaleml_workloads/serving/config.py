"""A model's Triton configuration (config.pbtxt, protobuf text format) from a ModelDeployment spec and a model card.

The text is written by hand rather than through Triton's protobuf classes so that the workload
image needs no Triton package; Triton's own parser checks it in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from scaleml_api.profile import TensorSpec
from scaleml_api.repository import (
    ATTRIBUTIONS_NAME,
    EXPLAIN_SUFFIX,
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    TRITON_PYTHON_MODEL_FILE,
)
from scaleml_api.runtime import TRACE_DIR, trace_rate, traced_by_triton
from scaleml_api.v1alpha1.modeldeployment import Backend, Batching, ModelDeploymentSpec

# The model file Triton loads from a version directory, per backend.
MODEL_FILES: Final[dict[Backend, str]] = {
    "pytorch": TORCHSCRIPT_FILE,
    "onnx": ONNX_FILE,
    "python": TRITON_PYTHON_MODEL_FILE,
}
_PLATFORMS: Final[dict[Backend, str]] = {
    "pytorch": 'platform: "pytorch_libtorch"',
    "onnx": 'platform: "onnxruntime_onnx"',
}

InstanceKind = Literal["KIND_GPU", "KIND_CPU"]
# The parameters a python-backend model reads its capture from (torchscript_model.py).
CAPTURE_RATE_PARAMETER: Final = "scaleml_capture_rate"
TRACES_DIR_PARAMETER: Final = "scaleml_traces_dir"
# An explanation model computes gradients: the python-backend runner must not run it in inference
# mode (this parameter), nor the libtorch backend (its own INFERENCE_MODE parameter).
GRADIENTS_PARAMETER: Final = "scaleml_gradients"


@dataclass(frozen=True)
class ModelConfig:
    """What config.pbtxt says, independent of its text form."""

    name: str
    backend: Backend
    inputs: Sequence[TensorSpec]
    outputs: Sequence[TensorSpec]
    batching: Batching = field(default_factory=Batching)
    instance_count: int = 1
    instance_kind: InstanceKind = "KIND_CPU"
    # None: the newest version; a number: exactly that one.
    version: int | None = None
    # A python-backend model that captures: one request in every `capture_rate` traced into `traces_dir`.
    capture_rate: int = 0
    traces_dir: str = ""
    # An explanation model, which needs gradients.
    gradients: bool = False

    def render(self) -> str:
        lines = [
            f"name: {quoted(self.name)}",
            _PLATFORMS.get(self.backend, f"backend: {quoted(self.backend)}"),
            f"default_model_filename: {quoted(MODEL_FILES[self.backend])}",
            f"max_batch_size: {self.batching.max_batch_size}",
            "version_policy: "
            + (
                "{ latest: { num_versions: 1 } }"
                if self.version is None
                else f"{{ specific: {{ versions: [ {self.version} ] }} }}"
            ),
            *_tensors("input", self.inputs),
            *_tensors("output", self.outputs),
            f"instance_group [ {{ count: {self.instance_count}, kind: {self.instance_kind} }} ]",
        ]
        if self.capture_rate:
            lines += [
                _parameter(CAPTURE_RATE_PARAMETER, str(self.capture_rate)),
                _parameter(TRACES_DIR_PARAMETER, self.traces_dir),
            ]
        if self.gradients:
            lines.append(
                _parameter("INFERENCE_MODE", "false")
                if self.backend == "pytorch"
                else _parameter(GRADIENTS_PARAMETER, "true")
            )
        if self.batching.max_batch_size > 0:
            preferred = ", ".join(map(str, self.batching.preferred_batch_sizes))
            lines.append(
                "dynamic_batching {"
                + (f" preferred_batch_size: [ {preferred} ]" if preferred else "")
                + f" max_queue_delay_microseconds: {self.batching.max_queue_delay_microseconds} }}"
            )
        return "\n".join(lines) + "\n"


def instance_kind(spec: ModelDeploymentSpec) -> InstanceKind:
    if spec.instances.kind == "auto":
        return "KIND_GPU" if spec.resources.gpus > 0 else "KIND_CPU"
    return "KIND_GPU" if spec.instances.kind == "gpu" else "KIND_CPU"


def deployment_config(
    spec: ModelDeploymentSpec,
    model_name: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    version: int | None,
    traces_dir: str = TRACE_DIR,
) -> ModelConfig:
    """The configuration a ModelDeployment asks for, with the tensors of the version it serves.

    A python-backend model with capture on writes the traces of its sampled requests itself, into
    `traces_dir`: Triton's tracer is off for it (runtime.traced_by_triton).
    """
    writes_traces = spec.capture.enabled and not traced_by_triton(spec)
    return ModelConfig(
        name=model_name,
        backend=spec.backend,
        inputs=inputs,
        outputs=outputs,
        batching=spec.batching,
        instance_count=spec.instances.count,
        instance_kind=instance_kind(spec),
        version=version,
        capture_rate=trace_rate(spec.capture.sample_rate) if writes_traces else 0,
        traces_dir=traces_dir if writes_traces else "",
    )


def quoted(text: str) -> str:
    """A protobuf text-format string literal of `text`: whatever it holds, it stays one string.

    The names are validated before they get here (tensor names are identifiers); escaping is the
    second line of defence, so a name can never add a field to the config.
    """
    escaped = "".join(
        f"\\{char}" if char in "\\\"'" else char if char.isprintable() and char.isascii() else _octal(char)
        for char in text
    )
    return f'"{escaped}"'


def _octal(char: str) -> str:
    return "".join(f"\\{byte:03o}" for byte in char.encode())


def _parameter(key: str, value: str) -> str:
    return f"parameters {{ key: {quoted(key)}, value: {{ string_value: {quoted(value)} }} }}"


def _dims(dims: Sequence[int]) -> str:
    return ", ".join(map(str, dims))


def _tensors(section: str, tensors: Sequence[TensorSpec]) -> list[str]:
    entries = ",\n".join(
        f"  {{ name: {quoted(tensor.name)}, data_type: {tensor.data_type}, dims: [ {_dims(tensor.dims)} ] }}"
        for tensor in tensors
    )
    return [f"{section} [\n{entries}\n]"]


def explain_config(config: ModelConfig) -> ModelConfig:
    """The configuration of the explanation model served beside `config`'s (export/explain.py).

    Same input, batching and instances; one output, an attribution per input element. It runs on
    the libtorch backend, or on the python backend when the model does (an ONNX file has no gradients).
    """
    (tensor,) = config.inputs
    return ModelConfig(
        name=f"{config.name}{EXPLAIN_SUFFIX}",
        backend="python" if config.backend == "python" else "pytorch",
        inputs=config.inputs,
        outputs=[TensorSpec(name=ATTRIBUTIONS_NAME, data_type="TYPE_FP32", dims=tensor.dims)],
        batching=config.batching,
        instance_count=config.instance_count,
        instance_kind=config.instance_kind,
        version=config.version,
        gradients=True,
    )
