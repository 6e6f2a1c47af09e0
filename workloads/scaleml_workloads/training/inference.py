"""The trained model's outputs on rows of the data, for what is measured after training (importance, calibration)."""

from __future__ import annotations

import torch
from torch import nn


def predict(model: nn.Module, features: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """The model's outputs for every row of `features`, in eval mode and float32 on the CPU, a batch at a time."""
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            output = model(features[start : start + batch_size].to(device))
            parts.append(output.float().cpu())
    return torch.cat(parts)
