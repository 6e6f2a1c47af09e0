"""The proxy: Triton's KServe v2 protocol over HTTP and gRPC, forwarded to the local server untouched.

HTTP: every method and path goes to Triton through one pooled client session, and Triton's answer
comes back as it was: status, headers (Content-Type, Content-Encoding,
Inference-Header-Content-Length, ...) and body, compressed bodies still compressed. Bodies are
streamed, both ways, in chunks: whatever their size, the proxy holds a chunk of each at a time.
A request body larger than `Limits.max_body_bytes` is refused with 413 (before it is read when its
Content-Length says so). Only a successful `POST /v2/models/{name}[/versions/{version}]/infer`
is captured, when the sampling draws it: a copy of its request and response bodies is kept while
they stream through, as long as each is at most `Limits.max_sample_bytes`; a larger one goes to
Triton and back untouched, and its sample is dropped (and counted, reason too_large).

gRPC: every method of `inference.GRPCInferenceService`, the bidirectional ModelStreamInfer
included, and the standard health check go to Triton as raw bytes through one channel; status
codes, details and metadata come back as Triton sent them. Only a successful ModelInfer is offered
to the capture. gRPC hands over whole messages, so they are bounded instead of streamed: at most
`Limits.max_grpc_message_bytes` each (larger ones end in RESOURCE_EXHAUSTED, as with any gRPC
server), and a client's message is read only once the memory the proxy holds for messages
(`Limits.max_grpc_inflight_bytes`) has room for the largest one: calls beyond take turns, and one
that waits longer than _GRPC_WAIT_SECONDS ends in RESOURCE_EXHAUSTED, for the client to retry.

The capture is never on the path: offering returns at once, and everything after happens in the
writer's thread. When Triton cannot be reached, HTTP clients get 502 and gRPC clients the
channel's UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
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

log = logging.getLogger(__name__)

MIB: Final = 1024 * 1024
# Bodies pass through in chunks of at most this much.
_CHUNK_BYTES: Final = 256 * 1024
_CONNECT_TIMEOUT_SECONDS: Final = 10.0
# How long a gRPC call waits for room in the budget before it is refused, and how long its message may
# take to arrive once it has room (a client that trickles one must not hold the room for long).
_GRPC_WAIT_SECONDS: Final = 30.0
_GRPC_READ_SECONDS: Final = 60.0
# A gRPC message is held up to three times while it is forwarded: gRPC's buffer of it as received,
# the bytes here, and gRPC's buffer of it on its way to Triton.
_COPIES: Final = 3


@dataclass(frozen=True)
class Limits:
    """What the proxy takes: the sizes that keep it within its memory limit whatever clients send.

    HTTP bodies stream, so `max_body_bytes` bounds what reaches Triton (which holds a whole body),
    not the proxy. `max_sample_bytes` bounds what one sample copies and decodes. gRPC messages are
    held whole: at most `max_grpc_message_bytes` each, and `max_grpc_inflight_bytes` of memory for
    the client messages of every call together (each counted _COPIES times its size, and the
    largest possible while it is being read): a call waits for room before its message is read.
    """

    max_body_bytes: int = 256 * MIB
    max_sample_bytes: int = 4 * MIB
    max_grpc_message_bytes: int = 64 * MIB
    max_grpc_inflight_bytes: int = 192 * MIB

    def grpc_options(self) -> tuple[tuple[str, int], ...]:
        return (
            ("grpc.max_send_message_length", self.max_grpc_message_bytes),
            ("grpc.max_receive_message_length", self.max_grpc_message_bytes),
        )


DEFAULT_LIMITS: Final = Limits()

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


class _RefusedError(Exception):
    """A gRPC call the proxy does not take: the status it ends with, and why."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Messages:
    """The client's messages of a client-streaming call, and why they ended early, if they did."""

    iterator: AsyncIterator[bytes]
    refused: _RefusedError | None = None


@dataclass
class _Upstream:
    """The call to Triton that forwards one client call, and the client's messages it carries."""

    call: Any = None
    request: Any = None  # the client's message, or an iterator over its messages
    held: int = 0  # what the message takes of the budget
    messages: _Messages | None = None

    @property
    def refused(self) -> _RefusedError | None:
        return self.messages.refused if self.messages is not None else None


class _Budget:
    """Bytes of gRPC messages the proxy may hold, for every call together; waiting calls take turns."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Condition()

    async def reserve(self, amount: int, patience: float) -> bool:
        """Takes `amount` once it fits (or once nothing else is held); False when it did not within `patience` s."""
        async with self._freed:
            try:
                await asyncio.wait_for(
                    self._freed.wait_for(lambda: self.used == 0 or self.used + amount <= self.limit), patience
                )
            except TimeoutError:
                return False
            self.used += amount
            return True

    async def release(self, amount: int) -> None:
        if amount:
            async with self._freed:
                self.used -= amount
                self._freed.notify_all()


class _BodyTooLargeError(Exception):
    """A request body without a Content-Length that turned out larger than the proxy forwards."""


class _Copy:
    """A copy of a body streaming through, for its sample: kept while it is at most `limit` bytes."""

    def __init__(self, limit: int, wanted: bool) -> None:
        self.limit = limit
        self.data: bytearray | None = bytearray() if wanted else None
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.data is not None:
            if self.size > self.limit:
                self.data = None
            else:
                self.data += chunk

    @property
    def too_large(self) -> bool:
        return self.size > self.limit


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

    def __init__(
        self,
        upstream_http: str,
        upstream_grpc: str,
        writer: CaptureWriter,
        grace: float,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.upstream_http = upstream_http
        self.upstream_grpc = upstream_grpc
        self.writer = writer
        self.grace = grace
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._channel: Any = None
        self._grpc_server: Any = None
        self._budget = _Budget(limits.max_grpc_inflight_bytes)

    async def start(self, http_port: int, grpc_port: int) -> None:
        """Listens on every interface."""
        options = self.limits.grpc_options()
        self._channel = grpc.aio.insecure_channel(self.upstream_grpc, options=options)
        # Without BDP probing, a stream's flow-control window stays at gRPC's initial 64 KiB: a call whose
        # message waits for room in the budget holds that much, where a window grown on a fast link would
        # let megabytes of each waiting message in.
        self._grpc_server = grpc.aio.server(options=(*options, ("grpc.http2.bdp_probe", 0)))
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
        # Bodies are streamed, never read whole: the bound is checked as they stream (`_request_body`).
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._http)
        # Request bodies go to Triton as they came, compressed ones still compressed: aiohttp would inflate
        # them (whatever they inflate to) and Triton would get a body its Content-Encoding does not describe.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.grace, auto_decompress=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, port=http_port).start()

    async def stop(self) -> None:
        """Stops listening, lets requests in flight finish, closes the connections to Triton."""
        assert self._runner is not None
        assert self._session is not None
        await asyncio.gather(self._grpc_server.stop(self.grace), self._runner.cleanup())
        await self._session.close()
        await self._channel.close()

    async def _http(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        started = time.perf_counter()
        timestamp = time.time()
        limits = self.limits
        declared = request.content_length
        if declared is not None and declared > limits.max_body_bytes:
            return self._counted(_too_large(declared, limits.max_body_bytes), started, 0.0)
        match = _INFER_PATH.fullmatch(request.path) if request.method == hdrs.METH_POST else None
        # Drawn before the body streams: a request that is not sampled is never copied.
        sampled = match is not None and self.writer.sampled()
        request_copy = _Copy(limits.max_sample_bytes, sampled)
        response_copy = _Copy(limits.max_sample_bytes, sampled)
        headers = _forwarded_headers(request.headers)
        if request.body_exists and declared is not None:
            headers[hdrs.CONTENT_LENGTH] = str(declared)
        body = self._request_body(request, request_copy) if request.body_exists else None
        url = URL(f"http://{self.upstream_http}{request.raw_path}", encoded=True)
        upstream_started = time.perf_counter()
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            ) as answer:
                response = web.StreamResponse(
                    status=answer.status, reason=answer.reason, headers=_forwarded_headers(answer.headers)
                )
                if answer.content_length is not None:
                    response.content_length = answer.content_length
                await response.prepare(request)
                async for chunk in answer.content.iter_chunked(_CHUNK_BYTES):
                    response_copy.add(chunk)
                    await response.write(chunk)
                await response.write_eof()
                status = answer.status
                answer_headers = answer.headers
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as error:
            upstream = time.perf_counter() - upstream_started
            if request_copy.size > limits.max_body_bytes:
                return self._counted(_too_large(request_copy.size, limits.max_body_bytes), started, upstream)
            if response is not None and response.prepared:
                # Triton's answer broke off half-way: so does ours, rather than end it as if complete.
                log.warning("the answer of Triton at %s broke off: %s", self.upstream_http, error)
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return self._counted(response, started, upstream)
            failed = web.Response(status=502, text=f"Triton at {self.upstream_http} is unreachable: {error}\n")
            return self._counted(failed, started, upstream)
        upstream = time.perf_counter() - upstream_started
        assert response is not None
        if sampled and status == 200:
            if request_copy.data is None or response_copy.data is None:
                largest = max(request_copy.size, response_copy.size)
                self.writer.drop("too_large", f"a body of at least {largest} bytes")
            else:
                self.writer.put(
                    HttpExchange(
                        timestamp=timestamp,
                        model=match["model"] if match else "",
                        request=HttpBody(
                            bytes(request_copy.data),
                            request.headers.get(HEADER_LENGTH),
                            request.headers.get(hdrs.CONTENT_ENCODING),
                        ),
                        response=HttpBody(
                            bytes(response_copy.data),
                            answer_headers.get(HEADER_LENGTH),
                            answer_headers.get(hdrs.CONTENT_ENCODING),
                        ),
                    )
                )
        return self._counted(response, started, upstream)

    async def _request_body(self, request: web.Request, copy: _Copy) -> AsyncIterator[bytes]:
        """The client's body as it arrives, copied into `copy`; ends the upload past `max_body_bytes`."""
        async for chunk in request.content.iter_chunked(_CHUNK_BYTES):
            copy.add(chunk)
            if copy.size > self.limits.max_body_bytes:
                raise _BodyTooLargeError(f"the request body passed {self.limits.max_body_bytes} bytes")
            yield chunk

    @staticmethod
    def _counted(response: web.StreamResponse, started: float, upstream: float) -> web.StreamResponse:
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
        """A handler that forwards `method` as bytes (no (de)serializers: gRPC passes bytes through).

        Every method is served as client-streaming, whatever it is: the client's messages are then
        read only when the handler asks for them (`_receive`), once the budget has room, instead of
        as soon as the call arrives. The call to Triton keeps the method's own kind.
        """
        multicallable = {
            (False, False): self._channel.unary_unary,
            (False, True): self._channel.unary_stream,
            (True, False): self._channel.stream_unary,
            (True, True): self._channel.stream_stream,
        }[client_streaming, server_streaming](method)
        if server_streaming:
            behaviour = functools.partial(self._forward_stream, multicallable, client_streaming)
            return grpc.stream_stream_rpc_method_handler(behaviour)
        unary = functools.partial(self._forward_unary, method, multicallable, client_streaming)
        return grpc.stream_unary_rpc_method_handler(unary)

    async def _receive(self, context: grpc.aio.ServicerContext) -> tuple[bytes, int]:
        """The client's next message, read once the budget has room for the largest one, and what it holds.

        Raises StopAsyncIteration after the last message, and _RefusedError when the budget has no
        room soon enough or the message takes too long to arrive.
        """
        most = _COPIES * self.limits.max_grpc_message_bytes
        remaining = context.time_remaining()
        wait = _GRPC_WAIT_SECONDS if remaining is None else min(_GRPC_WAIT_SECONDS, remaining)
        if not await self._budget.reserve(most, wait):
            raise _RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the capture proxy holds {self._budget.used} bytes of gRPC messages, at most "
                f"{self.limits.max_grpc_inflight_bytes}: try again",
            )
        try:
            # Read from the context, not the request iterator: its generator would keep the last message
            # alive until the garbage collector got round to it.
            message = await asyncio.wait_for(context.read(), _GRPC_READ_SECONDS)
            if message is grpc.aio.EOF:
                raise StopAsyncIteration
        except TimeoutError:
            await self._budget.release(most)
            raise _RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"a message took longer than {_GRPC_READ_SECONDS:.0f} s to arrive"
            ) from None
        except BaseException:
            await self._budget.release(most)
            raise
        held = _COPIES * len(message)
        await self._budget.release(most - held)
        return message, held

    async def _messages(self, context: grpc.aio.ServicerContext) -> _Messages:
        """The client's messages of a client-streaming call, each read as `_receive` reads them."""
        messages = _Messages()

        async def generate() -> AsyncIterator[bytes]:
            held = 0
            try:
                while True:
                    # The message before is on its way once the next one is asked for.
                    await self._budget.release(held)
                    held = 0
                    try:
                        message, held = await self._receive(context)
                    except StopAsyncIteration:
                        return
                    except _RefusedError as refused:
                        messages.refused = refused
                        return
                    yield message
            finally:
                await self._budget.release(held)

        messages.iterator = generate()
        return messages

    async def _open(
        self,
        upstream: _Upstream,
        multicallable: Callable[..., Any],
        client_streaming: bool,
        context: grpc.aio.ServicerContext,
    ) -> Any:
        """Starts the call to Triton with the client's message (or messages), read as the budget allows."""
        if client_streaming:
            upstream.messages = await self._messages(context)
            upstream.request = upstream.messages.iterator
        else:
            upstream.request, upstream.held = await self._receive(context)
        upstream.call = multicallable(
            upstream.request,
            metadata=_forwarded_metadata(context.invocation_metadata()),
            timeout=context.time_remaining(),
        )
        return upstream.call

    async def _forward_unary(
        self,
        method: str,
        multicallable: Callable[..., Any],
        client_streaming: bool,
        _requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> bytes:
        started = time.perf_counter()
        timestamp = time.time()
        upstream = _Upstream()
        try:
            call = await self._open(upstream, multicallable, client_streaming, context)
            upstream_started = time.perf_counter()
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError as error:
                if upstream.refused is not None:
                    raise upstream.refused from None
                self._count_grpc(error.code(), started, time.perf_counter() - upstream_started)
                await _fail_as(error, context)
            elapsed = time.perf_counter() - upstream_started
            await _relay_initial_metadata(await call.initial_metadata(), context)
            context.set_trailing_metadata(_forwarded_metadata(await call.trailing_metadata()))
            if method == _MODEL_INFER:
                self.writer.offer(GrpcExchange(timestamp=timestamp, request=upstream.request, response=response))
            self._count_grpc(grpc.StatusCode.OK, started, elapsed)
            return response
        except StopAsyncIteration:
            self._count_grpc(grpc.StatusCode.INTERNAL, started, 0.0)
            await context.abort(grpc.StatusCode.INTERNAL, "the call ended without a request message")
            raise
        except _RefusedError as refused:
            self._count_grpc(refused.code, started, 0.0)
            await context.abort(refused.code, refused.details)
            raise
        finally:
            await self._budget.release(upstream.held)

    async def _forward_stream(
        self,
        multicallable: Callable[..., Any],
        client_streaming: bool,
        _requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        upstream = _Upstream()
        code = grpc.StatusCode.CANCELLED
        try:
            call = await self._open(upstream, multicallable, client_streaming, context)
            initial_sent = False
            async for response in call:
                if not initial_sent:
                    await _relay_initial_metadata(await call.initial_metadata(), context)
                    initial_sent = True
                yield response
            if upstream.refused is not None:
                raise upstream.refused
            code = grpc.StatusCode.OK
            if not initial_sent:
                await _relay_initial_metadata(await call.initial_metadata(), context)
            context.set_trailing_metadata(_forwarded_metadata(await call.trailing_metadata()))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            await _fail_as(error, context)
        except (StopAsyncIteration, _RefusedError) as refused:
            code, details = (
                (refused.code, refused.details)
                if isinstance(refused, _RefusedError)
                else (grpc.StatusCode.INTERNAL, "the call ended without a request message")
            )
            await context.abort(code, details)
        finally:
            # A client that went away takes its stream to Triton with it.
            if upstream.call is not None:
                upstream.call.cancel()
            await self._budget.release(upstream.held)
            metrics.REQUESTS.labels("grpc", code.name).inc()

    def _count_grpc(self, code: grpc.StatusCode, started: float, upstream: float) -> None:
        metrics.REQUESTS.labels("grpc", code.name).inc()
        metrics.PROXY_OVERHEAD.labels("grpc").observe(time.perf_counter() - started - upstream)


def _too_large(size: int, limit: int) -> web.Response:
    return web.Response(
        status=413, text=f"the request body of {size} bytes is larger than the {limit} bytes the proxy forwards\n"
    )


async def _relay_initial_metadata(metadata: Any, context: grpc.aio.ServicerContext) -> None:
    forwarded = _forwarded_metadata(metadata)
    if forwarded:
        await context.send_initial_metadata(forwarded)


async def _fail_as(error: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext) -> None:
    """Ends the RPC (`abort` raises) with Triton's status, details and metadata."""
    await _relay_initial_metadata(error.initial_metadata(), context)
    await context.abort(error.code(), error.details() or "", _forwarded_metadata(error.trailing_metadata()))
