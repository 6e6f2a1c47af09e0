"""Optimizer and learning-rate schedule from the hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from scaleml_api.v1alpha1.trainingjob import Hyperparameters

# Plain SGD without momentum barely moves on most problems; 0.9 is the usual choice.
SGD_MOMENTUM = 0.9


def optimizer(parameters: Iterable[torch.nn.Parameter], hp: Hyperparameters) -> torch.optim.Optimizer:
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    if hp.optimizer == "adam":
        # Adam's weight decay is an L2 penalty added to the gradient, not decoupled.
        return torch.optim.Adam(parameters, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    return torch.optim.SGD(parameters, lr=hp.learning_rate, momentum=SGD_MOMENTUM, weight_decay=hp.weight_decay)


def schedule(optim: torch.optim.Optimizer, hp: Hyperparameters, total_steps: int) -> LambdaLR:
    """Linear warm-up over warmupSteps, then constant, cosine or linear decay to zero at total_steps."""
    warmup = hp.warmup_steps
    decay_steps = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay_steps)
        if hp.scheduler == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if hp.scheduler == "linear":
            return 1.0 - progress
        return 1.0

    return LambdaLR(optim, factor)
