"""The explanation model exported beside each version: integrated gradients of one prediction, as a TorchScript model.

Triton serves it as `<model>-explain` (see serving/agent.py). It takes the model's input and returns,
per row, one attribution per input element, in the input's shape:

    attribution_i = (x_i - b_i) * sum_k w_k * dF/dx_i (b + a_k (x - b))

F is the explained output: the predicted class's logit for a classifier, the value for a
regression. b is the baseline, the mean of the training rows. The a_k and w_k are the
Gauss-Legendre nodes and weights on [0, 1]. This is Captum's default (`IntegratedGradients`,
method "gausslegendre"), so the two agree up to float rounding. The attributions of a row add up
to F(x) - F(b), up to the quadrature's error (completeness). The error is small for smooth models
and grows with the kinks a ReLU network has along the path.

All STEPS points of every row go through the model in one batch, with one backward pass: the cost
of explaining a batch of B rows is that of predicting B * STEPS rows, twice. Token ids have no
path between them: a model over token ids gets no explanation model.
"""

# No `from __future__ import annotations`: TorchScript reads the class annotations as types.

import warnings
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import nn

STEPS: Final = 50


class IntegratedGradients(nn.Module):
    """Integrated gradients of `model`'s explained output, against `baseline`, over Gauss-Legendre points."""

    # Buffers: saved with the model, moved with it to the device Triton runs it on.
    baseline: torch.Tensor
    alphas: torch.Tensor
    weights: torch.Tensor

    def __init__(self, model: nn.Module, baseline: torch.Tensor, classification: bool, steps: int = STEPS) -> None:
        super().__init__()
        nodes, weights = np.polynomial.legendre.leggauss(steps)  # type: ignore[no-untyped-call]
        self.model = model
        self.classification = classification
        self.register_buffer("baseline", baseline.float().unsqueeze(0))
        # From [-1, 1] to [0, 1]: a = (x + 1) / 2, and the weights halve with the interval.
        self.register_buffer("alphas", torch.from_numpy((nodes + 1) / 2).float())
        self.register_buffer("weights", torch.from_numpy(weights / 2).float())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        steps, rows = self.alphas.shape[0], inputs.shape[0]
        shape = [steps, 1] + [1] * (inputs.dim() - 1)
        # TorchScript has no enable_grad block, no try and no list unpacking (hence the + below).
        # The caller runs this under no_grad (never inference mode, which nothing here could undo),
        # and its block restores the mode should the model raise before the last line resets it.
        was_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        outputs = self.model(inputs.detach())
        explained = outputs.argmax(dim=-1) if self.classification else torch.zeros_like(outputs[:, 0]).long()
        delta = inputs.detach() - self.baseline
        points = (self.baseline.unsqueeze(0) + self.alphas.view(shape) * delta.unsqueeze(0)).reshape(
            [steps * rows] + list(inputs.shape[1:])  # noqa: RUF005
        )
        points = points.detach().requires_grad_(True)
        outputs = self.model(points).reshape(steps * rows, -1)
        chosen = outputs.gather(1, explained.repeat(steps).unsqueeze(1))
        grads = torch.autograd.grad([chosen.sum()], [points])[0]
        torch.set_grad_enabled(was_enabled)
        if grads is None:
            return torch.zeros_like(inputs)
        averaged = (grads.reshape([steps] + list(inputs.shape)) * self.weights.view(shape)).sum(dim=0)  # noqa: RUF005
        return (delta * averaged).detach()


def save_explainer(
    model: nn.Module, example: torch.Tensor, baseline: torch.Tensor, classification: bool, path: Path
) -> None:
    """Script the integrated-gradients model of `model` (in eval mode on the CPU) and save it.

    `model` is traced on `example`, real rows (at least two), as the exported model is.
    """
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.9+ deprecates TorchScript; Triton's libtorch backend still loads only TorchScript.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
        traced = torch.jit.trace(model, example, check_inputs=[(example[:1],)])  # type: ignore[no-untyped-call]
        scripted = torch.jit.script(IntegratedGradients(traced, baseline, classification))
        torch.jit.save(scripted, str(path))
