"""The baseline of the serving bench: the plainest server that speaks enough of the KServe v2 protocol for tritonclient.

Stdlib `HTTPServer`, one request at a time and one connection per request, running the
TorchScript file with torch. `serving.py --baseline MODEL_PT` runs it in a process of its own.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from scaleml_workloads.export.formats import OUTPUT_NAME

_DTYPES: Final[dict[str, type[np.generic]]] = {
    "FP32": np.float32,
    "FP64": np.float64,
    "INT32": np.int32,
    "INT64": np.int64,
}
_INFER_PATH: Final = re.compile(r"/v2/models/([^/]+)(?:/versions/[0-9]+)?/infer")


def decode_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], list[npt.NDArray[Any]]]:
    """The JSON header and the input arrays of a KServe v2 request, binary tensor extension included."""
    header: dict[str, Any] = json.loads(body if header_length is None else body[:header_length])
    binary = memoryview(body)[header_length or len(body) :]
    arrays = []
    offset = 0
    for tensor in header["inputs"]:
        dtype = np.dtype(_DTYPES[tensor["datatype"]])
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is None:
            array = np.asarray(tensor["data"], dtype=dtype)
        else:
            array = np.frombuffer(binary, dtype=dtype, count=size // dtype.itemsize, offset=offset)
            offset += size
        arrays.append(array.reshape(tensor["shape"]))
    return header, arrays


def encode_response(model: str, request: dict[str, Any], name: str, output: npt.NDArray[Any]) -> tuple[bytes, int]:
    """The response body and the length of its JSON header; the output is binary unless asked as JSON."""
    requested = {entry["name"]: entry.get("parameters", {}) for entry in request.get("outputs", [])}
    binary = requested.get(name, {}).get("binary_data", request.get("parameters", {}).get("binary_data_output", False))
    datatype = next(key for key, value in _DTYPES.items() if np.dtype(value) == output.dtype)
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(output.shape)}
    raw = b""
    if binary:
        raw = np.ascontiguousarray(output).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = output.ravel().tolist()
    header = {"model_name": model, "model_version": "1", "outputs": [tensor]}
    if "id" in request:
        header["id"] = request["id"]
    encoded = json.dumps(header).encode()
    return encoded + raw, len(encoded)


def serve_baseline(model_file: Path) -> None:
    """Serves the TorchScript file one request at a time on a free port, which it prints first."""
    import torch  # only this process needs it

    model = torch.jit.load(str(model_file)).eval()  # type: ignore[no-untyped-call]

    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: the connection closes after each response. A keep-alive connection would hold
        # this one-at-a-time server for as long as its client keeps sending, starving the others.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._reply(200 if self.path in ("/v2/health/live", "/v2/health/ready") else 404, b"")

        def do_POST(self) -> None:
            match = _INFER_PATH.fullmatch(self.path)
            if match is None:
                self._reply(404, b"")
                return
            body = self.rfile.read(int(self.headers["Content-Length"]))
            length = self.headers.get("Inference-Header-Content-Length")
            try:
                request, arrays = decode_request(body, None if length is None else int(length))
            except (KeyError, ValueError, TypeError) as error:
                self._reply(400, json.dumps({"error": f"bad request: {error}"}).encode())
                return
            with torch.inference_mode():
                # A copy: the array views the read-only request body, which torch.from_numpy warns about.
                output = model(torch.from_numpy(arrays[0].copy())).numpy()
            response, header_length = encode_response(match[1], request, OUTPUT_NAME, output)
            self._reply(200, response, {"Inference-Header-Content-Length": str(header_length)})

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Thousands of requests a second would drown the output."""

    class OneAtATime(HTTPServer):
        # The clients connect anew for every request; with the default backlog of 5, the rest of
        # 32 connects would be dropped and retried a second later, measuring the kernel's SYN timer.
        request_queue_size = 256

    server = OneAtATime(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
