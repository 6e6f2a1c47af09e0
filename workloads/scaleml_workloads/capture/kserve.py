"""Decoding of KServe v2 inference requests and responses into NumPy arrays, by tensor name.

What Triton accepts and answers:

- HTTP: a JSON body whose tensors carry `data` (a flat or nested list), or the binary tensor
  extension: a JSON header, as long as the `Inference-Header-Content-Length` header says, followed
  by the raw data of each tensor whose `parameters` give a `binary_data_size`, in order. Either may
  be gzip or deflate compressed (`Content-Encoding`).
- gRPC: `ModelInferRequest` and `ModelInferResponse`, with the data in `raw_input_contents` /
  `raw_output_contents` (one entry per tensor) or in each tensor's typed `contents`.

Raw data is little-endian, in C order; a BYTES element is its length (4 bytes, little-endian)
followed by its bytes. What cannot be decoded (tensors in shared memory, BF16, a malformed or
inconsistent message) raises UndecodableError: the proxy then skips the sample, never the request.

Decoding is bounded (`Decoding`): a body that is, or decompresses to, more than `max_body_bytes`
raises TooLargeError as soon as the bound is passed, so a small gzip or deflate body that inflates
to gigabytes costs the bound, not the gigabytes. The request's `id` is kept only when asked for,
and at most its first MAX_ID_CHARS characters; model names and versions at most MAX_NAME_CHARS:
each is repeated on every row of the capture file.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from tritonclient.grpc import service_pb2

from scaleml_workloads.capture.files import BYTES, DATATYPES, Array, Sample, Tensor

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
# The largest body the capture decodes (decompressed), by default: larger ones are not sampled.
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
MAX_ID_CHARS: Final = 64
MAX_NAME_CHARS: Final = 128
_INFLATE_CHUNK: Final = 256 * 1024
_SHARED_MEMORY: Final = "shared_memory_region"
_LENGTH: Final = struct.Struct("<I")
# The typed field of gRPC's InferTensorContents that holds each datatype; FP16 has none (raw only).
_CONTENTS: Final = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class UndecodableError(Exception):
    """An inference the capture cannot turn into tensors; says why."""


class TooLargeError(UndecodableError):
    """An inference whose body is, or decompresses to, more than the capture decodes."""


@dataclass(frozen=True)
class Decoding:
    """How an exchange is decoded: the largest body (after decompression), and whether the request's id is kept."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_ids: bool = False


DEFAULT_DECODING: Final = Decoding()


@dataclass(frozen=True, eq=False)
class Message:
    """One side of an inference: the request's inputs or the response's outputs, and whom it names."""

    model: str
    model_version: str
    id: str
    tensors: tuple[Tensor, ...]


@dataclass(frozen=True, eq=False)
class HttpBody:
    """An HTTP request or response body as it went through the proxy, with the headers that say how to read it."""

    body: bytes
    header_length: str | None = None
    content_encoding: str | None = None


@dataclass(frozen=True, eq=False)
class HttpExchange:
    """A successful HTTP inference, as the proxy saw it; `model` comes from the request's path."""

    timestamp: float
    model: str
    request: HttpBody
    response: HttpBody

    @property
    def nbytes(self) -> int:
        return len(self.request.body) + len(self.response.body)

    @property
    def largest(self) -> int:
        return max(len(self.request.body), len(self.response.body))

    def decode(self, decoding: Decoding = DEFAULT_DECODING) -> Sample:
        with _undecodable("HTTP inference"):
            request = decode_http(self.request, "inputs", decoding.max_body_bytes)
            response = decode_http(self.response, "outputs", decoding.max_body_bytes)
            return _sample(self.timestamp, request, response, self.model, decoding)


@dataclass(frozen=True, eq=False)
class GrpcExchange:
    """A successful gRPC ModelInfer, as serialized on the wire."""

    timestamp: float
    request: bytes
    response: bytes

    @property
    def nbytes(self) -> int:
        return len(self.request) + len(self.response)

    @property
    def largest(self) -> int:
        return max(len(self.request), len(self.response))

    def decode(self, decoding: Decoding = DEFAULT_DECODING) -> Sample:
        if self.largest > decoding.max_body_bytes:
            raise TooLargeError(
                f"gRPC inference: a message of {self.largest} bytes, more than {decoding.max_body_bytes}"
            )
        with _undecodable("gRPC inference"):
            request = decode_grpc_request(self.request)
            response = decode_grpc_response(self.response)
            return _sample(self.timestamp, request, response, request.model, decoding)


Exchange = HttpExchange | GrpcExchange


def _sample(timestamp: float, request: Message, response: Message, model: str, decoding: Decoding) -> Sample:
    return Sample(
        timestamp=timestamp,
        model=(response.model or model)[:MAX_NAME_CHARS],
        model_version=(response.model_version or request.model_version)[:MAX_NAME_CHARS],
        request_id=(request.id or response.id)[:MAX_ID_CHARS] if decoding.request_ids else "",
        inputs=request.tensors,
        outputs=response.tensors,
    )


@contextlib.contextmanager
def _undecodable(what: str) -> Iterator[None]:
    """Turns what NumPy, json and protobuf raise on malformed input into UndecodableError."""
    try:
        yield
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, EOFError, zlib.error, DecodeError) as error:
        raise UndecodableError(f"{what}: {type(error).__name__}: {error}") from error
    except gzip.BadGzipFile as error:
        raise UndecodableError(f"{what}: {error}") from error


def decode_http(message: HttpBody, key: str, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Message:
    """The tensors listed under `key` ("inputs" of a request, "outputs" of a response) of an HTTP body.

    Raises TooLargeError when the body is, or decompresses to, more than `max_bytes`.
    """
    with _undecodable(f"HTTP {key}"):
        body = _decompressed(message.body, message.content_encoding, max_bytes)
        length = len(body) if message.header_length is None else int(message.header_length)
        if not 0 <= length <= len(body):
            raise UndecodableError(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
        header = json.loads(body[:length])
        binary = memoryview(body)[length:]
        offset = 0
        tensors = []
        for spec in header.get(key) or ():
            name, datatype, shape = str(spec["name"]), str(spec["datatype"]), _shape(spec["shape"])
            parameters = spec.get("parameters") or {}
            if _SHARED_MEMORY in parameters:
                raise UndecodableError(f"{name} is in shared memory")
            size = parameters.get("binary_data_size")
            if size is not None:
                if not isinstance(size, int) or not 0 <= size <= len(binary) - offset:
                    raise UndecodableError(f"{name}: binary_data_size {size} overruns the body")
                array = _from_raw(binary[offset : offset + size], datatype, shape)
                offset += size
            elif "data" in spec:
                array = _from_json(spec["data"], datatype, shape)
            else:
                raise UndecodableError(f"{name} has neither data nor binary_data_size")
            tensors.append(Tensor(name, datatype, array))
        if offset != len(binary):
            raise UndecodableError(f"{len(binary) - offset} bytes after the last binary tensor")
        return Message(
            model=str(header.get("model_name", "")),
            model_version=str(header.get("model_version", "")),
            id=str(header.get("id", "")),
            tensors=tuple(tensors),
        )


def decode_grpc_request(message: bytes) -> Message:
    with _undecodable("gRPC ModelInferRequest"):
        request = service_pb2.ModelInferRequest.FromString(message)
        return _grpc_message(request, _grpc_tensors(request.inputs, request.raw_input_contents))


def decode_grpc_response(message: bytes) -> Message:
    with _undecodable("gRPC ModelInferResponse"):
        response = service_pb2.ModelInferResponse.FromString(message)
        return _grpc_message(response, _grpc_tensors(response.outputs, response.raw_output_contents))


def _grpc_message(message: Any, tensors: tuple[Tensor, ...]) -> Message:
    """A ModelInferRequest or ModelInferResponse, which share their model, version and id fields."""
    return Message(model=message.model_name, model_version=message.model_version, id=message.id, tensors=tensors)


def _grpc_tensors(specs: Sequence[Any], raw: Sequence[bytes]) -> tuple[Tensor, ...]:
    """Tensors from their gRPC descriptions; `raw`, when present, holds the data of every one of them, in order."""
    if raw and len(raw) != len(specs):
        raise UndecodableError(f"{len(raw)} raw contents for {len(specs)} tensors")
    tensors = []
    for position, spec in enumerate(specs):
        name, datatype, shape = str(spec.name), str(spec.datatype), _shape(spec.shape)
        if _SHARED_MEMORY in spec.parameters:
            raise UndecodableError(f"{name} is in shared memory")
        if raw:
            array = _from_raw(memoryview(raw[position]), datatype, shape)
        elif datatype in _CONTENTS:
            array = _from_values(list(getattr(spec.contents, _CONTENTS[datatype])), datatype, shape)
        else:
            raise UndecodableError(f"{name}: {datatype} has no typed contents and came without raw contents")
        tensors.append(Tensor(name, datatype, array))
    return tuple(tensors)


def _decompressed(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """`body` decompressed, and no more than `max_bytes` of it ever (TooLargeError past them)."""
    if encoding in (None, "", "identity"):
        wbits = None
    elif encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise UndecodableError(f"unknown Content-Encoding {encoding}")
    if len(body) > max_bytes:
        raise TooLargeError(f"a body of {len(body)} bytes, more than {max_bytes}")
    if wbits is None:
        return body
    inflated = bytearray()
    pending = body
    # A gzip body may hold several members, one after the other; a deflate (zlib) body one stream.
    while pending:
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            # At most one byte past the bound: a bomb stops there, whatever it would inflate to.
            part = inflater.decompress(pending, min(_INFLATE_CHUNK, max_bytes + 1 - len(inflated)))
            inflated += part
            if len(inflated) > max_bytes:
                raise TooLargeError(f"a {encoding} body of {len(body)} bytes inflates past {max_bytes} bytes")
            pending = inflater.unconsumed_tail
            if not part and not pending:
                raise UndecodableError(f"the {encoding} body ends before its compressed stream does")
        pending = inflater.unused_data
        if pending and encoding == "deflate":
            raise UndecodableError(f"{len(pending)} bytes after the end of the deflate body")
    return bytes(inflated)


def _shape(dims: Sequence[Any]) -> tuple[int, ...]:
    shape = tuple(int(dim) for dim in dims)
    if any(dim < 0 for dim in shape):
        raise UndecodableError(f"shape {list(shape)} has a negative dimension")
    return shape


def _dtype(datatype: str) -> np.dtype[Any]:
    if datatype not in DATATYPES:
        raise UndecodableError(f"datatype {datatype} is not captured")
    return DATATYPES[datatype]


def _from_raw(data: memoryview, datatype: str, shape: tuple[int, ...]) -> Array:
    count = math.prod(shape)
    if datatype == BYTES:
        return _bytes_elements(data, count).reshape(shape)
    dtype = _dtype(datatype)
    if len(data) != count * dtype.itemsize:
        raise UndecodableError(f"{len(data)} bytes of {datatype} for shape {list(shape)}")
    # A copy in native order, which also frees the message once it is decoded.
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _bytes_elements(data: memoryview, count: int) -> Array:
    elements = np.empty(count, dtype=np.object_)
    offset = 0
    for index in range(count):
        if offset + _LENGTH.size > len(data):
            raise UndecodableError(f"BYTES tensor ends after {index} of {count} elements")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            raise UndecodableError(f"BYTES element {index} overruns the tensor")
        elements[index] = bytes(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise UndecodableError(f"{len(data) - offset} bytes after the last BYTES element")
    return elements


def _from_json(data: Any, datatype: str, shape: tuple[int, ...]) -> Array:
    values = list(_flattened(data))
    if datatype == BYTES:
        values = [value.encode() if isinstance(value, str) else value for value in values]
    return _from_values(values, datatype, shape)


def _flattened(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flattened(item)
    else:
        yield data


def _from_values(values: list[Any], datatype: str, shape: tuple[int, ...]) -> Array:
    if len(values) != math.prod(shape):
        raise UndecodableError(f"{len(values)} values for shape {list(shape)}")
    dtype = _dtype(datatype)
    if datatype == BYTES:
        if not all(isinstance(value, bytes) for value in values):
            raise UndecodableError("BYTES elements must be strings")
    elif not all(isinstance(value, bool | int | float) for value in values):
        raise UndecodableError(f"{datatype} elements must be numbers")
    array = np.empty(len(values), dtype=dtype)
    array[:] = values
    return array.reshape(shape)
