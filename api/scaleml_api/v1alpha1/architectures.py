"""Parameters of the built-in architectures.

The operator validates a TrainingJob's `model.params` against these models before it starts any
pod, and the training workload builds its network from the same models, so a typo in a
hyperparameter is an InvalidSpec condition rather than a crash inside a GPU pod.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, Self

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema, model_validator

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


# The shape of `model.params`: what the built-in architectures take (numbers, names, flags, lists of
# numbers: the longest, mlp's hiddenSizes, has up to 32), and so what a custom entrypoint's keyword
# arguments may be too. Bounded so that one object stays small in the API server and in the
# operator's memory, and shallow, so that no reader of it recurses deep.
MAX_PARAMS: Final = 32
MAX_PARAM_ITEMS: Final = 64
MAX_PARAM_CHARS: Final = 256
PARAM_SHAPE: Final = (
    f"a number, a string of at most {MAX_PARAM_CHARS} characters, true, false or null, "
    f"or a list of at most {MAX_PARAM_ITEMS} of those"
)


def _is_scalar(value: object) -> bool:
    return (
        value is None
        or isinstance(value, bool | int | float)
        or (isinstance(value, str) and len(value) <= MAX_PARAM_CHARS)
    )


def _param_value(value: object) -> object:
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_PARAM_ITEMS or not all(_is_scalar(item) for item in items):
        raise ValueError(f"must be {PARAM_SHAPE}")
    return value


# A structural schema gives each value one type, and a value here may be any scalar: so the values
# are untyped, and bounded by what JSON Schema checks of whichever type a value has. maxProperties 0
# keeps maps out, and a list's items may be neither maps nor lists (maxItems 0). CEL cannot help: the
# API server gives its rules no view of untyped values, nor so of this map's keys, which the operator
# checks.
_SCALAR_SCHEMA: Final = {
    "x-kubernetes-preserve-unknown-fields": True,
    "maxLength": MAX_PARAM_CHARS,
    "maxItems": 0,
    "maxProperties": 0,
}
ParamValue = Annotated[
    Any,
    AfterValidator(_param_value),
    WithJsonSchema({**_SCALAR_SCHEMA, "maxItems": MAX_PARAM_ITEMS, "items": _SCALAR_SCHEMA}),
]
# A keyword argument's name.
ParamName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]
Params = Annotated[dict[ParamName, ParamValue], Field(max_length=MAX_PARAMS)]


def parse_params(architecture: Architecture, params: dict[str, Any]) -> ApiModel | dict[str, Any]:
    """The typed parameters of a built-in architecture; a custom model's keyword arguments as given.

    Raises pydantic.ValidationError naming the offending parameter.
    """
    model = ARCHITECTURE_PARAMS.get(architecture)
    if model is None:
        return params
    return model.model_validate(params)
