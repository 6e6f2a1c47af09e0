"""What a capture file holds: its columns, the datatypes of its tensors, the samples that become its rows.

The metadata `scaleml.capture` that describes a file's tensors is written and parsed here too, so
that writers and readers agree on it by construction.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

Role = Literal["input", "output"]
Array = npt.NDArray[Any]

TIMESTAMP: Final = "timestamp"
MODEL: Final = "model"
MODEL_VERSION: Final = "model_version"
REQUEST_ID: Final = "request_id"
METADATA_KEY: Final = "scaleml.capture"
METADATA_VERSION: Final = 1
STRING_COLUMNS: Final = (MODEL, MODEL_VERSION, REQUEST_ID)
RESERVED_NAMES: Final = frozenset({TIMESTAMP, *STRING_COLUMNS, METADATA_KEY})

# The KServe v2 datatypes a capture file can hold, and their NumPy types (BYTES: Python bytes).
DATATYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
BYTES: Final = "BYTES"


@dataclass(frozen=True, eq=False)
class Tensor:
    """A tensor of a request or a response; the first dimension of `array` is the batch."""

    name: str
    datatype: str
    array: Array


@dataclass(frozen=True)
class TensorSpec:
    """A tensor column: what the file metadata records of it."""

    name: str
    role: Role
    datatype: str
    shape: tuple[int, ...]

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, eq=False)
class Sample:
    """One captured inference, whose rows are the first dimension of every tensor.

    Raises ValueError when it cannot become rows of a file: no tensor, a tensor without a batch
    dimension or with empty rows, batch sizes that disagree, a datatype outside DATATYPES, or a
    name used twice or taken by a column of the file.
    """

    timestamp: float
    model: str
    model_version: str
    request_id: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        tensors = self.inputs + self.outputs
        if not tensors:
            raise ValueError("no tensors")
        names = [tensor.name for tensor in tensors]
        if len(set(names)) != len(names) or RESERVED_NAMES & set(names):
            raise ValueError(f"tensor names {names} repeat or take one of the columns {sorted(RESERVED_NAMES)}")
        for tensor in tensors:
            if tensor.datatype not in DATATYPES:
                raise ValueError(f"{tensor.name}: datatype {tensor.datatype} cannot be captured")
            if tensor.array.ndim == 0 or math.prod(tensor.array.shape[1:]) == 0:
                raise ValueError(f"{tensor.name}: shape {list(tensor.array.shape)} has no batch of non-empty rows")
        batch_sizes = {tensor.array.shape[0] for tensor in tensors}
        if len(batch_sizes) != 1 or 0 in batch_sizes:
            raise ValueError(f"batch sizes {sorted(batch_sizes)} disagree or are empty")
        object.__setattr__(self, "rows", batch_sizes.pop())

    @functools.cached_property
    def layout(self) -> tuple[TensorSpec, ...]:
        """The tensor columns, inputs then outputs, each by name: clients may list tensors in any order."""
        roles: tuple[tuple[Role, tuple[Tensor, ...]], ...] = (("input", self.inputs), ("output", self.outputs))
        specs = (
            TensorSpec(tensor.name, role, tensor.datatype, tuple(tensor.array.shape[1:]))
            for role, tensors in roles
            for tensor in tensors
        )
        return tuple(sorted(specs, key=lambda spec: (spec.role, spec.name)))

    @functools.cached_property
    def nbytes(self) -> int:
        """The tensor data it holds (BYTES: the elements' lengths)."""
        return sum(
            sum(len(element) for element in tensor.array.flat) if tensor.datatype == BYTES else tensor.array.nbytes
            for tensor in self.inputs + self.outputs
        )

    def array(self, name: str) -> Array:
        return next(tensor.array for tensor in self.inputs + self.outputs if tensor.name == name)


def metadata_json(layout: Sequence[TensorSpec]) -> str:
    """The metadata `scaleml.capture` of a file whose tensors are `layout`."""
    return json.dumps({"version": METADATA_VERSION, "tensors": [spec.as_json() for spec in layout]})


def parse_metadata(metadata: str | bytes) -> list[TensorSpec]:
    """The tensors a file's metadata `scaleml.capture` describes; ValueError for a version this does not know."""
    description = json.loads(metadata)
    if description.get("version") != METADATA_VERSION:
        raise ValueError(f"unknown capture metadata version {description.get('version')!r}")
    return [
        TensorSpec(str(spec["name"]), spec["role"], str(spec["datatype"]), tuple(int(n) for n in spec["shape"]))
        for spec in description["tensors"]
    ]
