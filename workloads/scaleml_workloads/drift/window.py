"""Reading a window of live data: its model input checked against the reference's, and the features read out of it.

A window is what the capture files hold: arrays by tensor name, one row per captured row. The
features are read out of the model input (`Reference.input`, INPUT__0) as the profile says
(`reduction`, `axis`, `index`); other arrays (outputs, timestamps, ...) are ignored. What cannot
be read is a message, never an exception: an input missing, misshapen or not numbers
(`read_input`), a feature the profile places outside the input (`placement_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from scaleml_api.profile import FeatureProfile, TensorSpec

# How to read numeric features from the input: (reduction, axis, indices on that axis). Indices
# are None for every column in order (a numeric table), which a plain transposed copy reads fastest.
Read = tuple[str, int, Tensor | None]


def read_input(
    window: Mapping[str, npt.NDArray[np.generic]], spec: TensorSpec, device: torch.device, messages: list[str]
) -> tuple[Tensor | None, int]:
    """The window's input on the device and its rows; None (and a message) when it cannot be read."""
    name, dims = spec.name, tuple(spec.dims)
    array = window.get(name)
    if array is None:
        others = next((value for value in window.values() if np.ndim(value) > 0), None)
        rows = len(others) if others is not None else 0
        messages.append(f"the window has no {name} (it has {', '.join(sorted(window)) or 'nothing'})")
        return None, rows
    try:
        data = np.asarray(array)
    except (TypeError, ValueError) as error:
        messages.append(f"{name} is not an array: {error}")
        return None, 0
    rows = len(data) if data.ndim else 0
    if data.dtype.kind not in "biuf":
        messages.append(f"{name} holds {data.dtype} values, not numbers")
        return None, rows
    if data.shape[1:] != dims:
        messages.append(shape_problem(name, data.shape[1:], dims))
        return None, rows
    dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.float64
    return torch.from_numpy(np.ascontiguousarray(data, dtype=dtype)).to(device), rows


def shape_problem(name: str, shape: tuple[int, ...], dims: tuple[int, ...]) -> str:
    expected = f"rows of shape {list(dims)}"
    if len(shape) == len(dims) == 1:
        change = "added" if shape[0] > dims[0] else "missing"
        return (
            f"{name} has {shape[0]} columns, the reference's input has {dims[0]} "
            f"({abs(shape[0] - dims[0])} {change}): no feature is tested"
        )
    return f"{name} has rows of shape {list(shape)}, the reference's input has {expected}: no feature is tested"


def placement_problem(feature: FeatureProfile, dims: list[int]) -> str:
    """Why the feature cannot be read from inputs whose rows have shape `dims`, or ""."""
    if feature.reduction == "pool":
        return "" if feature.kind == "categorical" else "a numeric feature cannot be pooled; it is not tested"
    axis, index = feature.axis, feature.index
    if axis is None or index is None or not 1 <= axis <= len(dims) or not 0 <= index < dims[axis - 1]:
        return f"the profile places it at axis {axis}, index {index}, outside the input's rows of shape {dims}"
    if feature.reduction == "none" and len(dims) != 1:
        return f"the profile reads it as one value per row, but the input's rows have shape {dims}"
    if feature.reduction == "mean" and feature.kind == "categorical":
        return "a categorical feature cannot be averaged; it is not tested"
    return ""


def plan_reads(
    readable: list[FeatureProfile], dims: list[int], device: torch.device
) -> tuple[list[FeatureProfile], list[Read]]:
    """The numeric features in the order `read_numeric` reads them, and the reads, one per reduction and axis."""
    groups: dict[tuple[str, int], list[FeatureProfile]] = {}
    for feature in readable:
        groups.setdefault((feature.reduction, place(feature)[0]), []).append(feature)
    features = [feature for group in groups.values() for feature in group]
    reads: list[Read] = []
    for (reduction, axis), group in groups.items():
        indices = [place(feature)[1] for feature in group]
        every = reduction == "none" and indices == list(range(dims[0]))
        reads.append((reduction, axis, None if every else torch.tensor(indices, device=device)))
    return features, reads


def read_numeric(data: Tensor, reads: list[Read], device: torch.device) -> Tensor:
    """The numeric features' values, (rows, features), float64 for means.

    The transpose of a contiguous (features, rows) tensor: every statistic reads features whole.
    """
    blocks = []
    for reduction, axis, indices in reads:
        if indices is None:
            blocks.append(data.t().contiguous())
        elif reduction == "mean":
            per_row = data.movedim(axis, 1).reshape(data.shape[0], data.shape[axis], -1).to(torch.float64)
            blocks.append(torch.nanmean(per_row, dim=2).t().index_select(0, indices))
        else:
            blocks.append(data.t().index_select(0, indices))
    if not blocks:
        return torch.empty(0, data.shape[0], dtype=data.dtype, device=device).t()
    if len(blocks) == 1:
        return blocks[0].t()
    dtype = torch.float64 if any(block.dtype == torch.float64 for block in blocks) else data.dtype
    return torch.cat([block.to(dtype) for block in blocks]).t()


def read_codes(data: Tensor, feature: FeatureProfile) -> Tensor:
    """A categorical feature's values: every element of the input when pooled, else its place in each row."""
    if feature.reduction == "pool":
        return data.reshape(-1)
    return data.select(*place(feature))


def place(feature: FeatureProfile) -> tuple[int, int]:
    # A readable feature has both (see placement_problem).
    assert feature.axis is not None
    assert feature.index is not None
    return feature.axis, feature.index
