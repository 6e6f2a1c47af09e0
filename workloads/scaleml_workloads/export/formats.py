"""Serialising a model for Triton: TorchScript for the libtorch backend, ONNX for onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"

# protobuf refuses messages over 2 GiB: larger ONNX models keep their weights in a side file.
_ONNX_INLINE_LIMIT = 2**31 - 2**26


def save_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace `model` (in eval mode, on CPU) and save it; the trace is checked on a batch of another size."""
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.9+ deprecates TorchScript, but Triton's pytorch_libtorch backend still loads only TorchScript.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
        traced = torch.jit.trace(model, example, check_inputs=[(example[:1],)])  # type: ignore[no-untyped-call]
        torch.jit.save(traced, str(path))


def save_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export `model` with torch.export and onnxscript, the batch dimension dynamic."""
    size = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=size > _ONNX_INLINE_LIMIT,
        verbose=False,
    )
