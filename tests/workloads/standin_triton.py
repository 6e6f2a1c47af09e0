"""A stand-in for Triton behind the capture proxy, for loads the real server would spend minutes on.

    python -m tests.workloads.standin_triton --http-port P --grpc-port Q

HTTP: `GET /v2/health/ready` answers 200; any POST is read as it streams, and answered 200 with a
small KServe v2 response whose headers say how many bytes arrived and their SHA-256
(`X-Body-Bytes`, `X-Body-SHA256`, of the body as sent, compressed or not), so a client can tell
its body went through untouched. gRPC:
ModelInfer answers a small ModelInferResponse whose `id` is the request's size and SHA-256.
Loopback only; it holds no body, only a chunk at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from typing import Any, Final

import grpc
from aiohttp import web
from tritonclient.grpc import service_pb2

MODEL_INFER: Final = "/inference.GRPCInferenceService/ModelInfer"
RESPONSE: Final = json.dumps(
    {"model_name": "standin", "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}
).encode()
MAX_MESSAGE_BYTES: Final = 1024 * 1024 * 1024


async def _http(request: web.Request) -> web.Response:
    if request.method == "GET":
        return web.Response(status=200)
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    headers = {"X-Body-Bytes": str(size), "X-Body-SHA256": digest.hexdigest()}
    return web.Response(status=200, body=RESPONSE, content_type="application/json", headers=headers)


async def _model_infer(request: bytes, context: Any) -> bytes:
    response = service_pb2.ModelInferResponse(
        model_name="standin", id=f"{len(request)}:{hashlib.sha256(request).hexdigest()}"
    )
    response.outputs.add(name="OUTPUT__0", datatype="FP32", shape=[1, 1])
    response.raw_output_contents.append(b"\0\0\0\0")
    return bytes(response.SerializeToString())


async def _serve(http_port: int, grpc_port: int) -> None:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    server = grpc.aio.server(options=options)
    handler = grpc.unary_unary_rpc_method_handler(_model_infer)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", _http)
    # Bodies are hashed as they arrive, compressed ones still compressed.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", http_port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.http_port, args.grpc_port))


if __name__ == "__main__":
    main()
