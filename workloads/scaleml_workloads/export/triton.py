"""The model-level Triton configuration (config.pbtxt) for the TorchScript model."""

from __future__ import annotations

from typing import Final

from scaleml_workloads.contract.profile import TensorSpec

# The default of a ModelDeployment's batching.maxBatchSize; a deployment may write its own config.
DEFAULT_MAX_BATCH_SIZE: Final = 64


def torchscript_config(
    model_name: str, inputs: list[TensorSpec], outputs: list[TensorSpec], max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> str:
    """config.pbtxt for the pytorch_libtorch backend, in protobuf text format."""
    lines = [
        f'name: "{model_name}"',
        'platform: "pytorch_libtorch"',
        f"max_batch_size: {max_batch_size}",
        *_tensors("input", inputs),
        *_tensors("output", outputs),
    ]
    return "\n".join(lines) + "\n"


def _tensors(section: str, tensors: list[TensorSpec]) -> list[str]:
    entries = ",\n".join(
        f'  {{\n    name: "{tensor.name}"\n    data_type: {tensor.data_type}\n    dims: [ {_dims(tensor)} ]\n  }}'
        for tensor in tensors
    )
    return [f"{section} [\n{entries}\n]"]


def _dims(tensor: TensorSpec) -> str:
    return ", ".join(map(str, tensor.dims))
