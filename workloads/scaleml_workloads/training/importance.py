"""Permutation importance of each feature on the validation rows, written into the reference profile.

A feature's importance is how much worse the model does when that feature's values are shuffled
across the rows, everything else kept: the accuracy lost (classification) or the RMSE gained
(regression, in the target's units), mean over REPEATS shuffles. It needs the model only (no
gradients, no retraining), measures what the trained model relies on rather than what the data
correlates with, and is on the scale of the validation metric, so importances of one model add up
to a share of what it knows.

Where a feature sits in the input is read from its profile (see scaleml_api.profile): a column
(`reduction: none`) is shuffled alone; a channel of an image or a feature of a sequence
(`reduction: mean`) is shuffled as a whole slice, every element of it moving with its row, which
is what that feature means to the monitor too. A `pool` feature (the token ids of a text model) is
the whole input, with nothing to rank it against: it keeps no importance.

Cost is bounded: at most MAX_ROWS validation rows (a seeded subsample), and fewer when the model
has many features, so that no more than ROW_BUDGET rows pass through the model in all.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from scaleml_api.profile import DataProfile
from scaleml_workloads.training.data import Task
from scaleml_workloads.training.inference import predict

REPEATS: Final = 5
MAX_ROWS: Final = 2000
# Rows through the model over every feature and repeat: about a second of a small model on one core.
ROW_BUDGET: Final = 1_000_000
# The fewest rows a shuffle is measured on, whatever the number of features: fewer would be noise.
MIN_ROWS: Final = 200


def error(outputs: torch.Tensor, target: torch.Tensor, task: Task) -> float:
    """The share of wrong answers (classification) or the RMSE (regression)."""
    if task == "classification":
        return float((outputs.argmax(dim=-1) != target).double().mean())
    return float(((outputs.squeeze(-1).double() - target.double()) ** 2).mean().sqrt())


def rows_to_measure(available: int, features: int) -> int:
    """Validation rows to shuffle on: all up to MAX_ROWS, fewer with many features (see ROW_BUDGET)."""
    budget = max(MIN_ROWS, ROW_BUDGET // max(1, features * REPEATS))
    return min(available, MAX_ROWS, budget)


def permutation_importance(
    model: nn.Module,
    features: torch.Tensor,
    target: torch.Tensor,
    task: Task,
    positions: list[tuple[int, int]],
    *,
    seed: int,
    device: torch.device,
    repeats: int = REPEATS,
) -> list[float]:
    """Per (axis, index) position of `features`, the error gained when that slice is shuffled across rows."""
    generator = np.random.default_rng(seed)
    baseline = error(predict(model, features, device), target, task)
    importances = []
    for axis, index in positions:
        where: list[slice | int] = [slice(None)] * features.dim()
        where[axis] = index
        gained = []
        for _ in range(repeats):
            order = torch.from_numpy(generator.permutation(len(features)))
            shuffled = features.clone()
            shuffled[tuple(where)] = features[order][tuple(where)]
            gained.append(error(predict(model, shuffled, device), target, task) - baseline)
        importances.append(float(np.mean(gained)))
    return importances


def with_importance(
    profile: DataProfile,
    model: nn.Module,
    features: npt.NDArray[np.float32] | npt.NDArray[np.int64],
    target: npt.NDArray[np.int64] | npt.NDArray[np.float32],
    rows: npt.NDArray[np.int64],
    task: Task,
    *,
    seed: int,
    device: torch.device,
) -> DataProfile:
    """`profile` with the importance of every column or channel feature, measured on `rows` (validation)."""
    # Where each ranked feature sits: (its number in the profile, axis, index).
    ranked = [
        (number, feature.axis, feature.index)
        for number, feature in enumerate(profile.features)
        if feature.reduction != "pool" and feature.axis is not None and feature.index is not None
    ]
    if len(rows) < 2 or not ranked:
        return profile
    size = rows_to_measure(len(rows), len(ranked))
    chosen = np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))
    values = permutation_importance(
        model,
        torch.from_numpy(features[chosen]),
        torch.from_numpy(target[chosen]),
        task,
        [(axis, index) for _, axis, index in ranked],
        seed=seed,
        device=device,
    )
    measured = {number: value for (number, _, _), value in zip(ranked, values, strict=True)}
    return profile.model_copy(
        update={
            "features": [
                feature.model_copy(update={"importance": measured[number]}) if number in measured else feature
                for number, feature in enumerate(profile.features)
            ]
        }
    )
