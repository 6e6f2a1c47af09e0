"""The networks, built from the contract's architecture parameters, wrapped so the served model takes raw data.

`PredictionModel` is what is trained, checkpointed and exported: it fills missing inputs and
standardises them with statistics of the training rows, runs the network, and for regression maps
the output back to the target's units. A client therefore sends the same raw values the data file
holds (categories as their codes, missing values as NaN) and gets logits or a value in target units.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from scaleml_api.repository import STATE_DICT_FILE
from scaleml_api.v1alpha1.architectures import (
    Activation,
    CNNParams,
    MLPParams,
    ResNetParams,
    TransformerParams,
    parse_params,
)
from scaleml_api.v1alpha1.trainingjob import ModelSpec
from scaleml_workloads.export.repository import resolve_version
from scaleml_workloads.training.data import TrainingData
from scaleml_workloads.training.errors import InvalidInputError

_ACTIVATIONS: dict[Activation, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


class Standardize(nn.Module):
    """Replaces missing values (NaN) by the training mean, then scales each feature to zero mean and unit variance."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.where(torch.isnan(x), self.mean, x)
        return (x - self.mean) / self.std


class Rescale(nn.Module):
    """Maps a standardised regression output back to the target's units, in float32 whatever the autocast."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() * self.std + self.mean


class PredictionModel(nn.Module):
    """Input scaling, the network, and output scaling: the whole model from raw data to prediction."""

    def __init__(self, inputs: nn.Module, net: nn.Module, outputs: nn.Module) -> None:
        super().__init__()
        self.inputs = inputs
        self.net = net
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prediction: torch.Tensor = self.outputs(self.net(self.inputs(x)))
        return prediction


def build_model(spec: ModelSpec, data: TrainingData, train_rows: npt.NDArray[np.int64]) -> PredictionModel:
    """The model for `spec`, sized for `data`; its initialisation depends only on torch's current seed."""
    outputs = len(data.labels) if spec.task == "classification" else 1
    net = _network(spec, data.sample_shape, outputs)
    inputs: nn.Module = nn.Identity() if data.tokens else _standardize(data, train_rows)
    if spec.task == "classification":
        return PredictionModel(inputs, net, nn.Identity())
    target = data.target[train_rows].astype(np.float64)
    return PredictionModel(inputs, net, Rescale(float(target.mean()), float(target.std()) or 1.0))


def warm_start(model: nn.Module, spec: ModelSpec, output_dir: Path, model_name: str) -> str:
    """Load the state of the version `spec.initFrom` names into `model`; returns "MODEL/VERSION" or ""."""
    if not spec.init_from:
        return ""
    try:
        version_dir = resolve_version(output_dir, model_name, spec.init_from)
    except LookupError as error:
        raise InvalidInputError(f"model.initFrom '{spec.init_from}': {error}") from None
    path = version_dir / STATE_DICT_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (OSError, RuntimeError) as error:
        raise InvalidInputError(
            f"model.initFrom '{spec.init_from}' ({path}) does not fit this model: {error}"
        ) from None
    return f"{version_dir.parent.name}/{version_dir.name}"


def feature_axis(sample_ndim: int) -> int:
    """The axis of a batch that indexes features: columns (N, F), channels (N, C, H, W), or the last of (N, T, F)."""
    return 2 if sample_ndim == 2 else 1


def _standardize(data: TrainingData, train_rows: npt.NDArray[np.int64]) -> Standardize:
    # Sums in float64 over a float32 copy: numpy's nan-functions would take longer than an epoch of a small model.
    values = data.features[train_rows]
    axis = feature_axis(values.ndim - 1)
    reduce = tuple(dim for dim in range(values.ndim) if dim != axis)
    present = ~np.isnan(values)
    values = np.where(present, values, np.float32(0))
    # A feature without any value (allowed by maxMissingFraction=1) gets mean 0 and scale 1.
    count = np.maximum(present.sum(axis=reduce, keepdims=True), 1)
    mean = values.sum(axis=reduce, dtype=np.float64, keepdims=True) / count
    centred = np.where(present, values - mean.astype(np.float32), np.float32(0))
    std = np.sqrt(np.square(centred).sum(axis=reduce, dtype=np.float64, keepdims=True) / count)
    std[std == 0] = 1.0
    # Drop the batch axis: the statistics broadcast over one row.
    return Standardize(torch.from_numpy(mean[0]).float(), torch.from_numpy(std[0]).float())


def _network(spec: ModelSpec, sample_shape: tuple[int, ...], outputs: int) -> nn.Module:
    params = parse_params(spec.architecture, spec.params)
    if isinstance(params, MLPParams):
        return _mlp(params, math.prod(sample_shape), outputs)
    if isinstance(params, CNNParams):
        return _cnn(params, _image_channels(spec, sample_shape), outputs)
    if isinstance(params, ResNetParams):
        return ResNet(params, _image_channels(spec, sample_shape), outputs)
    if isinstance(params, TransformerParams):
        return Transformer(params, sample_shape, outputs)
    assert isinstance(params, dict)
    return _custom(spec.entrypoint, params)


def _image_channels(spec: ModelSpec, sample_shape: tuple[int, ...]) -> int:
    if len(sample_shape) != 3:
        raise InvalidInputError(
            f"model.architecture {spec.architecture} needs image features of shape rows x channels x height x width; "
            f"the data has rows x {' x '.join(map(str, sample_shape))}"
        )
    return sample_shape[0]


def _mlp(params: MLPParams, inputs: int, outputs: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = inputs
    for size in params.hidden_sizes:
        layers.append(nn.Linear(width, size))
        if params.batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(_ACTIVATIONS[params.activation]())
        if params.dropout:
            layers.append(nn.Dropout(params.dropout))
        width = size
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def _cnn(params: CNNParams, channels: int, outputs: int) -> nn.Module:
    layers: list[nn.Module] = []
    for width in params.channels:
        layers += [
            nn.Conv2d(channels, width, params.kernel_size, padding=params.kernel_size // 2),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            # Ceil mode, so an image smaller than the number of stages still keeps one pixel.
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        channels = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(params.dropout), nn.Linear(channels, outputs)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (He et al., 2016), projecting the shortcut when the shape changes."""

    def __init__(self, channels: int, width: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels != width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.body(x) + self.shortcut(x)
        return torch.relu(residual)


class ResNet(nn.Module):
    """A residual network: a stem, then stages of basic blocks, each stage halving the size and doubling the width."""

    def __init__(self, params: ResNetParams, channels: int, outputs: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, params.width, 3, padding=1, bias=False), nn.BatchNorm2d(params.width), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        width = params.width
        for stage, count in enumerate(params.blocks):
            stage_width = params.width * 2**stage
            for block in range(count):
                blocks.append(BasicBlock(width, stage_width, 2 if stage > 0 and block == 0 else 1))
                width = stage_width
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(params.dropout), nn.Linear(width, outputs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.stages(self.stem(x)))
        return logits


class Transformer(nn.Module):
    """A transformer encoder with learned positions, mean-pooled into a linear head.

    With vocabSize > 0 the input is token ids (rows x sequence); otherwise it is a sequence of
    feature vectors (rows x sequence x features), and a table (rows x features) is read as a
    sequence of its features, one scalar each.
    """

    def __init__(self, params: TransformerParams, sample_shape: tuple[int, ...], outputs: int) -> None:
        super().__init__()
        if len(sample_shape) not in ((1,) if params.vocab_size else (1, 2)):
            shape = " x ".join(map(str, sample_shape))
            wanted = (
                "rows x sequence token ids" if params.vocab_size else "rows x features or rows x sequence x features"
            )
            raise InvalidInputError(f"model.architecture transformer needs {wanted}; the data has rows x {shape}")
        length = sample_shape[0]
        if length > params.max_sequence_length:
            raise InvalidInputError(
                f"the data's sequences have length {length}, more than model.params.maxSequenceLength="
                f"{params.max_sequence_length}"
            )
        self.tokens = params.vocab_size > 0
        self.embed: nn.Module = (
            nn.Embedding(params.vocab_size, params.d_model)
            if self.tokens
            else nn.Linear(sample_shape[1] if len(sample_shape) == 2 else 1, params.d_model)
        )
        self.position = nn.Parameter(torch.zeros(1, params.max_sequence_length, params.d_model))
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            params.d_model, params.heads, params.dim_feedforward, params.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, params.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(params.d_model)
        self.head = nn.Sequential(nn.Dropout(params.dropout), nn.Linear(params.d_model, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tokens and x.dim() == 2:
            x = x.unsqueeze(-1)
        h = self.embed(x)
        h = h + self.position[:, : h.shape[1]]
        pooled: torch.Tensor = self.norm(self.encoder(h)).mean(dim=1)
        logits: torch.Tensor = self.head(pooled)
        return logits


def _custom(entrypoint: str, params: dict[str, Any]) -> nn.Module:
    module_name, _, function_name = entrypoint.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise InvalidInputError(f"model.entrypoint '{entrypoint}' cannot be imported: {error}") from None
    try:
        model = function(**params)
    except TypeError as error:
        raise InvalidInputError(f"model.entrypoint '{entrypoint}' rejects model.params: {error}") from None
    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            f"model.entrypoint '{entrypoint}' returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
