"""The capture proxy decodes what Triton's own clients encode: KServe v2 over HTTP (JSON and binary) and gRPC."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import serialize_byte_tensor, triton_to_np_dtype

from scaleml_workloads.capture.kserve import (
    MAX_ID_CHARS,
    Decoding,
    GrpcExchange,
    HttpBody,
    HttpExchange,
    Message,
    TooLargeError,
    UndecodableError,
    decode_grpc_request,
    decode_grpc_response,
    decode_http,
)

Array = npt.NDArray[Any]

NUMERIC = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"]
# Datatypes whose gRPC typed contents exist (FP16 travels only as raw bytes).
TYPED = [datatype for datatype in NUMERIC if datatype != "FP16"]
_TYPED_FIELD = {
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
STRINGS = np.array([[b"churn", b""], ["caf\u00e9".encode(), b"\x00\xff binary"], [b"x" * 300, b"y"]], dtype=np.object_)


def values(datatype: str, shape: tuple[int, ...], seed: int = 0) -> Array:
    """Values spanning the datatype's range, extremes included."""
    rng = np.random.default_rng(seed)
    dtype: np.dtype[Any] = np.dtype(triton_to_np_dtype(datatype))
    if datatype == "BOOL":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        array.flat[0], array.flat[-1] = info.min, info.max
        return array
    return (rng.normal(size=shape) * 100).astype(dtype)


def http_input(name: str, array: Array, datatype: str, binary: bool) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def http_request(tensors: list[httpclient.InferInput], request_id: str = "") -> HttpBody:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(tensors, request_id=request_id)
    return HttpBody(body, None if json_size is None else str(json_size))


def http_response(outputs: list[tuple[str, str, Array, bool]], model: str = "churn", version: str = "3") -> HttpBody:
    """A response body as Triton writes it: binary outputs after the JSON header, JSON outputs inline."""
    specs, binary = [], b""
    for name, datatype, array, as_binary in outputs:
        spec: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if as_binary:
            data = _raw(array, datatype)
            spec["parameters"] = {"binary_data_size": len(data)}
            binary += data
        else:
            spec["data"] = [v.decode() for v in array.flat] if datatype == "BYTES" else array.ravel().tolist()
        specs.append(spec)
    header = json.dumps({"model_name": model, "model_version": version, "id": "r-7", "outputs": specs}).encode()
    return HttpBody(header + binary, str(len(header)) if binary else None)


def _raw(array: Array, datatype: str) -> bytes:
    if datatype == "BYTES":
        serialized = serialize_byte_tensor(array)
        return bytes(serialized.item()) if serialized.size else b""
    return bytes(array.astype(np.dtype(triton_to_np_dtype(datatype)).newbyteorder("<")).tobytes())


def tensors_of(message: Message) -> dict[str, tuple[str, Array]]:
    return {tensor.name: (tensor.datatype, tensor.array) for tensor in message.tensors}


def assert_same(decoded: Array, expected: Array) -> None:
    assert decoded.shape == expected.shape
    assert decoded.dtype == expected.dtype
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_requests_of_every_numeric_datatype_decode_to_the_arrays_sent(binary: bool) -> None:
    sent = {datatype: values(datatype, (3, 2, 2), seed=n) for n, datatype in enumerate(NUMERIC)}
    request = http_request([http_input(datatype, array, datatype, binary) for datatype, array in sent.items()], "q-1")

    decoded = decode_http(request, "inputs")

    assert decoded.id == "q-1"
    assert list(tensors_of(decoded)) == list(sent)
    for datatype, array in sent.items():
        got_datatype, got = tensors_of(decoded)[datatype]
        assert got_datatype == datatype
        assert_same(got, array)


def test_http_requests_mixing_binary_and_json_tensors_decode_each() -> None:
    features = values("FP32", (4, 5))
    counts = values("INT64", (4, 1), seed=1)
    request = http_request(
        [http_input("INPUT__0", features, "FP32", True), http_input("COUNT", counts, "INT64", False)]
    )

    decoded = tensors_of(decode_http(request, "inputs"))

    assert_same(decoded["INPUT__0"][1], features)
    assert_same(decoded["COUNT"][1], counts)


def test_http_json_data_may_be_nested_lists() -> None:
    body = json.dumps(
        {"inputs": [{"name": "X", "datatype": "INT32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}]}
    ).encode()

    decoded = tensors_of(decode_http(HttpBody(body), "inputs"))

    assert_same(decoded["X"][1], np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_bytes_tensors_decode_to_their_elements(binary: bool) -> None:
    strings = STRINGS if binary else STRINGS[:, :1]  # JSON carries UTF-8 text only
    request = http_request([http_input("TEXT", strings, "BYTES", binary)])

    datatype, decoded = tensors_of(decode_http(request, "inputs"))["TEXT"]

    assert datatype == "BYTES"
    assert decoded.shape == strings.shape
    assert decoded.tolist() == strings.tolist()


def test_http_responses_decode_as_triton_s_own_client_reads_them() -> None:
    probabilities = values("FP32", (4, 2))
    labels = np.array([[b"no"], [b"yes"], [b"yes"], [b"no"]], dtype=np.object_)
    flags = values("BOOL", (4, 1))
    response = http_response(
        [("OUTPUT__0", "FP32", probabilities, True), ("LABEL", "BYTES", labels, True), ("FLAG", "BOOL", flags, False)]
    )
    assert response.header_length is not None
    reference = httpclient.InferResult.from_response_body(response.body, header_length=int(response.header_length))

    decoded = decode_http(response, "outputs")

    assert (decoded.model, decoded.model_version, decoded.id) == ("churn", "3", "r-7")
    outputs = tensors_of(decoded)
    assert_same(outputs["OUTPUT__0"][1], reference.as_numpy("OUTPUT__0"))
    assert outputs["LABEL"][1].tolist() == reference.as_numpy("LABEL").tolist()
    assert_same(outputs["FLAG"][1], reference.as_numpy("FLAG"))


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_compressed_http_bodies_are_decompressed(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    features = values("FP32", (2, 5))
    plain = http_request([http_input("INPUT__0", features, "FP32", True)])

    decoded = decode_http(HttpBody(compress(plain.body), plain.header_length, encoding), "inputs")

    assert_same(tensors_of(decoded)["INPUT__0"][1], features)


def grpc_request(arrays: dict[str, tuple[str, Array]], raw: bool) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="churn", model_version="2", id="g-1")
    for name, (datatype, array) in arrays.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            request.raw_input_contents.append(_raw(array, datatype))
        else:
            getattr(tensor.contents, _TYPED_FIELD[datatype]).extend(array.ravel().tolist())
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw_contents", "typed_contents"])
def test_grpc_requests_decode_to_the_arrays_sent(raw: bool) -> None:
    sent = {
        datatype: (datatype, values(datatype, (2, 3), seed=n)) for n, datatype in enumerate(NUMERIC if raw else TYPED)
    }
    sent["TEXT"] = ("BYTES", STRINGS)

    decoded = decode_grpc_request(grpc_request(sent, raw).SerializeToString())

    assert (decoded.model, decoded.model_version, decoded.id) == ("churn", "2", "g-1")
    got = tensors_of(decoded)
    assert list(got) == list(sent)
    for name, (datatype, array) in sent.items():
        assert got[name][0] == datatype
        if datatype == "BYTES":
            assert got[name][1].tolist() == array.tolist()
        else:
            assert_same(got[name][1], array)


def grpc_response(probabilities: Array, version: str = "4", request_id: str = "") -> bytes:
    response = service_pb2.ModelInferResponse(model_name="churn", model_version=version, id=request_id)
    response.outputs.add(name="OUTPUT__0", datatype="FP32", shape=list(probabilities.shape))
    response.raw_output_contents.append(probabilities.tobytes())
    return bytes(response.SerializeToString())


def test_grpc_responses_decode_their_raw_outputs() -> None:
    probabilities = values("FP32", (5, 2))

    decoded = decode_grpc_response(grpc_response(probabilities, request_id="g-2"))

    assert (decoded.model, decoded.model_version, decoded.id) == ("churn", "4", "g-2")
    assert_same(tensors_of(decoded)["OUTPUT__0"][1], probabilities)


def test_an_exchange_becomes_a_sample_with_the_response_s_model_version_and_the_request_s_id() -> None:
    features = values("FP32", (3, 5))
    probabilities = values("FP32", (3, 2), seed=1)
    request = grpc_request({"INPUT__0": ("FP32", features)}, raw=True)

    exchange = GrpcExchange(12.5, request.SerializeToString(), grpc_response(probabilities, version="7"))
    sample = exchange.decode(Decoding(request_ids=True))

    assert (sample.timestamp, sample.model, sample.model_version, sample.request_id, sample.rows) == (
        12.5,
        "churn",
        "7",
        "g-1",
        3,
    )
    assert_same(sample.array("INPUT__0"), features)
    assert_same(sample.array("OUTPUT__0"), probabilities)


def test_the_request_id_is_dropped_unless_asked_for_and_cut_to_its_first_characters() -> None:
    request = grpc_request({"INPUT__0": ("FP32", values("FP32", (3, 5)))}, raw=True)
    response = grpc_response(values("FP32", (3, 2)), request_id="r" * 1000)
    long_id = service_pb2.ModelInferRequest.FromString(request.SerializeToString())
    long_id.id = "x" * 1000

    assert GrpcExchange(0.0, request.SerializeToString(), response).decode().request_id == ""
    kept = GrpcExchange(0.0, long_id.SerializeToString(), response).decode(Decoding(request_ids=True))
    assert kept.request_id == "x" * MAX_ID_CHARS


BOMB_BYTES = 256 * 1024 * 1024


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", lambda data: gzip.compress(data, 9)), ("deflate", lambda data: zlib.compress(data, 9))],
)
def test_decompression_stops_at_the_bound_however_far_the_body_would_inflate(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    plain = http_request([http_input("INPUT__0", values("FP32", (2, 5)), "FP32", True)])
    # A valid header, then 256 MiB of zeros: a fraction of a megabyte on the wire.
    bomb = HttpBody(compress(plain.body + bytes(BOMB_BYTES)), plain.header_length, encoding)
    assert len(bomb.body) < 2 * 1024 * 1024

    with pytest.raises(TooLargeError, match="inflates past 1048576 bytes"):
        decode_http(bomb, "inputs", max_bytes=1024 * 1024)
    # At the bound exactly, a body decodes.
    fitting = HttpBody(compress(plain.body), plain.header_length, encoding)
    assert tensors_of(decode_http(fitting, "inputs", max_bytes=len(plain.body)))["INPUT__0"][1].shape == (2, 5)
    with pytest.raises(TooLargeError):
        decode_http(fitting, "inputs", max_bytes=len(plain.body) - 1)


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_body_cut_short_is_undecodable(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    plain = http_request([http_input("INPUT__0", values("FP32", (2, 5)), "FP32", True)])

    with pytest.raises(UndecodableError, match="ends before"):
        decode_http(HttpBody(compress(plain.body)[:-8], plain.header_length, encoding), "inputs")


def test_gzip_bodies_of_several_members_decode_whole() -> None:
    features = values("FP32", (2, 5))
    plain = http_request([http_input("INPUT__0", features, "FP32", True)])
    half = len(plain.body) // 2
    members = gzip.compress(plain.body[:half]) + gzip.compress(plain.body[half:])

    decoded = decode_http(HttpBody(members, plain.header_length, "gzip"), "inputs")

    assert_same(tensors_of(decoded)["INPUT__0"][1], features)


def test_an_exchange_with_a_body_past_the_bound_is_too_large_not_undecodable() -> None:
    response = grpc_response(values("FP32", (1, 2)))
    request = grpc_request({"INPUT__0": ("FP32", values("FP32", (1, 5)))}, raw=True).SerializeToString()

    with pytest.raises(TooLargeError):
        GrpcExchange(0.0, request, response).decode(Decoding(max_body_bytes=len(request) - 1))
    with pytest.raises(TooLargeError):
        HttpExchange(0.0, "churn", _valid_http_request(), _valid_http_response()).decode(Decoding(max_body_bytes=64))


def _valid_http_request() -> HttpBody:
    return http_request([http_input("INPUT__0", values("FP32", (2, 5)), "FP32", True)])


def _valid_http_response() -> HttpBody:
    return http_response([("OUTPUT__0", "FP32", values("FP32", (2, 2)), True)])


def _json(*inputs: dict[str, Any]) -> HttpBody:
    return HttpBody(json.dumps({"inputs": list(inputs)}).encode())


UNDECODABLE_HTTP_REQUESTS = {
    "header length beyond the body": HttpBody(_valid_http_request().body, "100000"),
    "binary data cut short": HttpBody(_valid_http_request().body[:-4], _valid_http_request().header_length),
    "bytes after the last tensor": HttpBody(_valid_http_request().body + b"\0", _valid_http_request().header_length),
    "not JSON": HttpBody(b"\x89PNG"),
    "unknown encoding": HttpBody(_valid_http_request().body, _valid_http_request().header_length, "br"),
    "shared memory": _json(
        {"name": "X", "datatype": "FP32", "shape": [1, 1], "parameters": {"shared_memory_region": "r"}}
    ),
    "no data": _json({"name": "X", "datatype": "FP32", "shape": [1, 1]}),
    "too few values": _json({"name": "X", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}),
    "strings for numbers": _json({"name": "X", "datatype": "FP32", "shape": [1, 1], "data": ["a"]}),
    "BF16": _json({"name": "X", "datatype": "BF16", "shape": [1, 1], "data": [1.0]}),
    "negative dimension": _json({"name": "X", "datatype": "FP32", "shape": [-1, 1], "data": [1.0]}),
    "BYTES element overrunning": HttpBody(
        json.dumps(
            {"inputs": [{"name": "S", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]}
        ).encode()
        + b"\x09\0\0\0ab",
        None,
    ),
    "a tensor named like a column": _json({"name": "timestamp", "datatype": "FP32", "shape": [2, 5], "data": [0] * 10}),
    "another batch size than the outputs": _json({"name": "X", "datatype": "FP32", "shape": [3, 1], "data": [1, 2, 3]}),
    "no batch dimension": _json({"name": "X", "datatype": "FP32", "shape": [], "data": [1]}),
}


def test_the_valid_http_exchange_the_failures_start_from_decodes() -> None:
    assert HttpExchange(0.0, "churn", _valid_http_request(), _valid_http_response()).decode().rows == 2


@pytest.mark.parametrize("request_body", UNDECODABLE_HTTP_REQUESTS.values(), ids=UNDECODABLE_HTTP_REQUESTS)
def test_what_cannot_be_decoded_raises_undecodable_error(request_body: HttpBody) -> None:
    with pytest.raises(UndecodableError):
        HttpExchange(0.0, "churn", request_body, _valid_http_response()).decode()


def test_undecodable_grpc_messages_raise_undecodable_error() -> None:
    valid = grpc_request({"INPUT__0": ("FP32", values("FP32", (1, 5)))}, raw=True)
    fp16_typed = service_pb2.ModelInferRequest(model_name="churn")
    fp16_typed.inputs.add(name="X", datatype="FP16", shape=[1, 1])
    raw_count = grpc_request({"A": ("FP32", values("FP32", (1, 1)))}, raw=True)
    raw_count.inputs.add(name="B", datatype="FP32", shape=[1, 1])
    response = grpc_response(values("FP32", (1, 2)))
    assert GrpcExchange(0.0, valid.SerializeToString(), response).decode().rows == 1

    for request in (b"\xff\xff\xff", fp16_typed.SerializeToString(), raw_count.SerializeToString()):
        with pytest.raises(UndecodableError):
            GrpcExchange(0.0, request, response).decode()
    with pytest.raises(UndecodableError):
        GrpcExchange(0.0, valid.SerializeToString(), response[:-3]).decode()
