"""The proxy: Triton's KServe v2 protocol over HTTP and gRPC, forwarded to the local server untouched.

HTTP: every method and path goes to Triton through one pooled client session, and Triton's answer
comes back as it was: status, headers (Content-Type, Content-Encoding,
Inference-Header-Content-Length, ...) and body, compressed bodies still compressed. Only a
successful `POST /v2/models/{name}[/versions/{version}]/infer` is offered to the capture.

gRPC: every method of `inference.GRPCInferenceService`, the bidirectional ModelStreamInfer
included, and the standard health check go to Triton as raw bytes through one channel; status
codes, details and metadata come back as Triton sent them. Only a successful ModelInfer is offered
to the capture.

The capture is never on the path: offering returns at once, and everything after happens in the
writer's thread. When Triton cannot be reached, HTTP clients get 502 and gRPC clients the
channel's UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

import aiohttp
import grpc
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from tritonclient.grpc import service_pb2
from yarl import URL

from scaleml_workloads.capture import metrics
from scaleml_workloads.capture.kserve import HEADER_LENGTH, GrpcExchange, HttpBody, HttpExchange
from scaleml_workloads.capture.writer import CaptureWriter

MAX_MESSAGE_BYTES: Final = 256 * 1024 * 1024
_GRPC_OPTIONS: Final = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
_CONNECT_TIMEOUT_SECONDS: Final = 10.0

_INFER_PATH: Final = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/infer")
# Headers about one connection, not the message (RFC 9110, section 7.6.1), and those each side's
# HTTP stack sets for its own connection.
_NOT_FORWARDED: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)

_INFERENCE: Final = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
_MODEL_INFER: Final = f"/{_INFERENCE.full_name}/ModelInfer"
# Triton also serves the standard health check (not its Watch), which Kubernetes' gRPC probes call.
_HEALTH: Final = "grpc.health.v1.Health"
_HEALTH_METHODS: Final = (("Check", False, False),)
# Metadata that gRPC itself sets on each hop.
_RESERVED_METADATA: Final = frozenset({"user-agent", "content-type", "te"})


def _forwarded_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in _NOT_FORWARDED)


def _forwarded_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value)
        for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) and key not in _RESERVED_METADATA
    )


class Proxy:
    """Both servers and their connections to Triton; `writer` receives the successful inferences.

    `grace` is how long requests in flight may take once `stop` is called.
    """

    def __init__(self, upstream_http: str, upstream_grpc: str, writer: CaptureWriter, grace: float) -> None:
        self.upstream_http = upstream_http
        self.upstream_grpc = upstream_grpc
        self.writer = writer
        self.grace = grace
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._channel: Any = None
        self._grpc_server: Any = None

    async def start(self, http_port: int, grpc_port: int) -> None:
        """Listens on every interface."""
        self._channel = grpc.aio.insecure_channel(self.upstream_grpc, options=_GRPC_OPTIONS)
        self._grpc_server = grpc.aio.server(options=_GRPC_OPTIONS)
        self._grpc_server.add_generic_rpc_handlers(self._grpc_handlers())
        self._grpc_server.add_insecure_port(f"[::]:{grpc_port}")
        await self._grpc_server.start()

        self._session = aiohttp.ClientSession(
            # One upstream connection per client connection, as if the client called Triton itself.
            connector=aiohttp.TCPConnector(limit=0),
            # Triton's bodies go back as they came, compressed or not, and without headers of our own.
            auto_decompress=False,
            skip_auto_headers=(hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_SECONDS),
        )
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        app.router.add_route("*", "/{path:.*}", self._http)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.grace)
        await self._runner.setup()
        await web.TCPSite(self._runner, port=http_port).start()

    async def stop(self) -> None:
        """Stops listening, lets requests in flight finish, closes the connections to Triton."""
        assert self._runner is not None
        assert self._session is not None
        await asyncio.gather(self._grpc_server.stop(self.grace), self._runner.cleanup())
        await self._session.close()
        await self._channel.close()

    async def _http(self, request: web.Request) -> web.Response:
        assert self._session is not None
        started = time.perf_counter()
        timestamp = time.time()
        body = await request.read()
        url = URL(f"http://{self.upstream_http}{request.raw_path}", encoded=True)
        upstream_started = time.perf_counter()
        try:
            async with self._session.request(
                request.method,
                url,
                headers=_forwarded_headers(request.headers),
                data=body or None,
                allow_redirects=False,
            ) as answer:
                content = await answer.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            upstream = time.perf_counter() - upstream_started
            response = web.Response(status=502, text=f"Triton at {self.upstream_http} is unreachable: {error}\n")
        else:
            upstream = time.perf_counter() - upstream_started
            response = web.Response(
                status=answer.status, reason=answer.reason, headers=_forwarded_headers(answer.headers), body=content
            )
            match = _INFER_PATH.fullmatch(request.path)
            if answer.status == 200 and request.method == hdrs.METH_POST and match:
                self.writer.offer(
                    HttpExchange(
                        timestamp=timestamp,
                        model=match["model"],
                        request=HttpBody(
                            body, request.headers.get(HEADER_LENGTH), request.headers.get(hdrs.CONTENT_ENCODING)
                        ),
                        response=HttpBody(
                            content, answer.headers.get(HEADER_LENGTH), answer.headers.get(hdrs.CONTENT_ENCODING)
                        ),
                    )
                )
        metrics.REQUESTS.labels("http", str(response.status)).inc()
        metrics.PROXY_OVERHEAD.labels("http").observe(time.perf_counter() - started - upstream)
        return response

    def _grpc_handlers(self) -> list[Any]:
        services = (
            (_INFERENCE.full_name, [(m.name, m.client_streaming, m.server_streaming) for m in _INFERENCE.methods]),
            (_HEALTH, _HEALTH_METHODS),
        )
        return [
            grpc.method_handlers_generic_handler(
                service,
                {name: self._grpc_handler(f"/{service}/{name}", *streaming) for name, *streaming in methods},
            )
            for service, methods in services
        ]

    def _grpc_handler(self, method: str, client_streaming: bool, server_streaming: bool) -> Any:
        """A handler that forwards `method` as bytes (no (de)serializers: gRPC passes bytes through)."""
        multicallable = {
            (False, False): self._channel.unary_unary,
            (False, True): self._channel.unary_stream,
            (True, False): self._channel.stream_unary,
            (True, True): self._channel.stream_stream,
        }[client_streaming, server_streaming](method)
        handler_factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[client_streaming, server_streaming]
        if server_streaming:
            return handler_factory(functools.partial(self._forward_stream, multicallable))
        return handler_factory(functools.partial(self._forward_unary, method, multicallable))

    async def _forward_unary(
        self, method: str, multicallable: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext
    ) -> bytes:
        started = time.perf_counter()
        timestamp = time.time()
        call = multicallable(
            request, metadata=_forwarded_metadata(context.invocation_metadata()), timeout=context.time_remaining()
        )
        upstream_started = time.perf_counter()
        try:
            response: bytes = await call
        except grpc.aio.AioRpcError as error:
            self._count_grpc(error.code(), started, time.perf_counter() - upstream_started)
            await _fail_as(error, context)
        upstream = time.perf_counter() - upstream_started
        await _relay_initial_metadata(await call.initial_metadata(), context)
        context.set_trailing_metadata(_forwarded_metadata(await call.trailing_metadata()))
        if method == _MODEL_INFER:
            self.writer.offer(GrpcExchange(timestamp=timestamp, request=request, response=response))
        self._count_grpc(grpc.StatusCode.OK, started, upstream)
        return response

    async def _forward_stream(
        self, multicallable: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        call = multicallable(
            request, metadata=_forwarded_metadata(context.invocation_metadata()), timeout=context.time_remaining()
        )
        code = grpc.StatusCode.CANCELLED
        try:
            initial_sent = False
            async for response in call:
                if not initial_sent:
                    await _relay_initial_metadata(await call.initial_metadata(), context)
                    initial_sent = True
                yield response
            code = grpc.StatusCode.OK
            if not initial_sent:
                await _relay_initial_metadata(await call.initial_metadata(), context)
            context.set_trailing_metadata(_forwarded_metadata(await call.trailing_metadata()))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            await _fail_as(error, context)
        finally:
            # A client that went away takes its stream to Triton with it.
            call.cancel()
            metrics.REQUESTS.labels("grpc", code.name).inc()

    def _count_grpc(self, code: grpc.StatusCode, started: float, upstream: float) -> None:
        metrics.REQUESTS.labels("grpc", code.name).inc()
        metrics.PROXY_OVERHEAD.labels("grpc").observe(time.perf_counter() - started - upstream)


async def _relay_initial_metadata(metadata: Any, context: grpc.aio.ServicerContext) -> None:
    forwarded = _forwarded_metadata(metadata)
    if forwarded:
        await context.send_initial_metadata(forwarded)


async def _fail_as(error: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext) -> None:
    """Ends the RPC (`abort` raises) with Triton's status, details and metadata."""
    await _relay_initial_metadata(error.initial_metadata(), context)
    await context.abort(error.code(), error.details() or "", _forwarded_metadata(error.trailing_metadata()))
