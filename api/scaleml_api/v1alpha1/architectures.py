"""Parameters of the built-in architectures.

The operator validates a TrainingJob's `model.params` against these models before it starts any
pod, and the training workload builds its network from the same models, so a typo in a
hyperparameter is an InvalidSpec condition rather than a crash inside a GPU pod.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import Field, model_validator

from scaleml_api.base import ApiModel

Architecture = Literal["mlp", "cnn", "resnet", "transformer", "custom"]
Activation = Literal["relu", "gelu", "silu", "tanh"]


class MLPParams(ApiModel):
    """A multilayer perceptron for tabular features."""

    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64], min_length=1, max_length=32)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    activation: Activation = "relu"
    batch_norm: bool = False

    @model_validator(mode="after")
    def _positive_sizes(self) -> Self:
        if any(not 1 <= size <= 65536 for size in self.hidden_sizes):
            raise ValueError("hiddenSizes must each be between 1 and 65536")
        return self


class CNNParams(ApiModel):
    """A plain convolutional network for images (NCHW)."""

    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1, max_length=16)
    kernel_size: int = Field(default=3, ge=1, le=11)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _odd_kernel(self) -> Self:
        if self.kernel_size % 2 == 0:
            raise ValueError("kernelSize must be odd so that padding keeps the image size")
        if any(not 1 <= c <= 4096 for c in self.channels):
            raise ValueError("channels must each be between 1 and 4096")
        return self


class ResNetParams(ApiModel):
    """A residual network for images: basic blocks per stage, width doubling per stage."""

    blocks: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1, max_length=8)
    width: int = Field(default=64, ge=8, le=1024)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class TransformerParams(ApiModel):
    """A transformer encoder over token ids (vocabSize > 0) or feature sequences (vocabSize 0)."""

    d_model: int = Field(default=128, ge=8, le=8192)
    heads: int = Field(default=4, ge=1, le=128)
    layers: int = Field(default=2, ge=1, le=96)
    dim_feedforward: int = Field(default=256, ge=8, le=65536)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    vocab_size: int = Field(default=0, ge=0, le=1_000_000)
    max_sequence_length: int = Field(default=512, ge=1, le=65536)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> Self:
        if self.d_model % self.heads:
            raise ValueError(f"dModel ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


ARCHITECTURE_PARAMS: dict[str, type[ApiModel]] = {
    "mlp": MLPParams,
    "cnn": CNNParams,
    "resnet": ResNetParams,
    "transformer": TransformerParams,
}


def parse_params(architecture: Architecture, params: dict[str, Any]) -> ApiModel | dict[str, Any]:
    """The typed parameters of a built-in architecture; a custom model's keyword arguments as given.

    Raises pydantic.ValidationError naming the offending parameter.
    """
    model = ARCHITECTURE_PARAMS.get(architecture)
    if model is None:
        return params
    return model.model_validate(params)
