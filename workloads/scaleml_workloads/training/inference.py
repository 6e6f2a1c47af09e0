"""The trained model's outputs on rows of the data, for what is measured after training (importance, calibration)."""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

# Rows per forward pass: bounds the memory of one pass, whatever the number of rows.
BATCH_SIZE: Final = 1024


def predict(model: nn.Module, features: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's outputs for every row of `features`, in eval mode and float32 on the CPU, a batch at a time."""
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(features), BATCH_SIZE):
            output = model(features[start : start + BATCH_SIZE].to(device))
            parts.append(output.float().cpu())
    return torch.cat(parts)
