"""The gRPC side of the capture proxy: Triton's KServe v2 gRPC service, forwarded as raw bytes.

Every method of `inference.GRPCInferenceService`, the bidirectional ModelStreamInfer included, and
the standard health check go to Triton as raw bytes through one channel; status codes, details and
metadata come back as Triton sent them. Only a successful ModelInfer is offered to the capture.
gRPC hands over whole messages, so they are bounded instead of streamed: at most
`Limits.max_grpc_message_bytes` each (larger ones end in RESOURCE_EXHAUSTED, as with any gRPC
server), and a client's message is read only once the memory the proxy holds for messages
(`Limits.max_grpc_inflight_bytes`) has room for the largest one: calls beyond take turns, and one
that waits longer than _GRPC_WAIT_SECONDS ends in RESOURCE_EXHAUSTED, for the client to retry.
When Triton cannot be reached, clients get the channel's UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from tritonclient.grpc import service_pb2

from scaleml_workloads.capture import metrics
from scaleml_workloads.capture.kserve import GrpcExchange
from scaleml_workloads.capture.limits import GRPC_COPIES, Limits
from scaleml_workloads.capture.writer import CaptureWriter

# How long a gRPC call waits for room in the budget before it is refused, and how long its message may
# take to arrive once it has room (a client that trickles one must not hold the room for long).
_GRPC_WAIT_SECONDS: Final = 30.0
_GRPC_READ_SECONDS: Final = 60.0

_INFERENCE: Final = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
_MODEL_INFER: Final = f"/{_INFERENCE.full_name}/ModelInfer"
# Triton also serves the standard health check (not its Watch), which Kubernetes' gRPC probes call.
_HEALTH: Final = "grpc.health.v1.Health"
_HEALTH_METHODS: Final = (("Check", False, False),)
# Metadata that gRPC itself sets on each hop.
_RESERVED_METADATA: Final = frozenset({"user-agent", "content-type", "te"})


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


def _forwarded_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(
        (key, value)
        for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) and key not in _RESERVED_METADATA
    )


class GrpcProxy:
    """The gRPC server and its channel to Triton; `writer` receives the successful inferences."""

    def __init__(self, upstream: str, writer: CaptureWriter, grace: float, limits: Limits) -> None:
        self.upstream = upstream
        self.writer = writer
        self.grace = grace
        self.limits = limits
        self._channel: Any = None
        self._server: Any = None
        self._budget = _Budget(limits.max_grpc_inflight_bytes)

    async def start(self, port: int) -> None:
        """Listens on every interface."""
        options = self.limits.grpc_options()
        self._channel = grpc.aio.insecure_channel(self.upstream, options=options)
        # Without BDP probing, a stream's flow-control window stays at gRPC's initial 64 KiB: a call whose
        # message waits for room in the budget holds that much, where a window grown on a fast link would
        # let megabytes of each waiting message in.
        self._server = grpc.aio.server(options=(*options, ("grpc.http2.bdp_probe", 0)))
        self._server.add_generic_rpc_handlers(self._handlers())
        self._server.add_insecure_port(f"[::]:{port}")
        await self._server.start()

    async def stop(self) -> None:
        """Stops listening, lets calls in flight finish (`grace` s at most), closes the channel."""
        await self._server.stop(self.grace)
        await self._channel.close()

    def _handlers(self) -> list[Any]:
        services = (
            (_INFERENCE.full_name, [(m.name, m.client_streaming, m.server_streaming) for m in _INFERENCE.methods]),
            (_HEALTH, _HEALTH_METHODS),
        )
        return [
            grpc.method_handlers_generic_handler(
                service,
                {name: self._handler(f"/{service}/{name}", *streaming) for name, *streaming in methods},
            )
            for service, methods in services
        ]

    def _handler(self, method: str, client_streaming: bool, server_streaming: bool) -> Any:
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
        most = GRPC_COPIES * self.limits.max_grpc_message_bytes
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
        held = GRPC_COPIES * len(message)
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
                _count(error.code(), started, time.perf_counter() - upstream_started)
                await _fail_as(error, context)
            elapsed = time.perf_counter() - upstream_started
            await _relay_initial_metadata(await call.initial_metadata(), context)
            context.set_trailing_metadata(_forwarded_metadata(await call.trailing_metadata()))
            if method == _MODEL_INFER:
                self.writer.offer(GrpcExchange(timestamp=timestamp, request=upstream.request, response=response))
            _count(grpc.StatusCode.OK, started, elapsed)
            return response
        except StopAsyncIteration:
            _count(grpc.StatusCode.INTERNAL, started, 0.0)
            await context.abort(grpc.StatusCode.INTERNAL, "the call ended without a request message")
            raise
        except _RefusedError as refused:
            _count(refused.code, started, 0.0)
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


def _count(code: grpc.StatusCode, started: float, upstream: float) -> None:
    metrics.count_request("grpc", code.name, time.perf_counter() - started - upstream)


async def _relay_initial_metadata(metadata: Any, context: grpc.aio.ServicerContext) -> None:
    forwarded = _forwarded_metadata(metadata)
    if forwarded:
        await context.send_initial_metadata(forwarded)


async def _fail_as(error: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext) -> None:
    """Ends the RPC (`abort` raises) with Triton's status, details and metadata."""
    await _relay_initial_metadata(error.initial_metadata(), context)
    await context.abort(error.code(), error.details() or "", _forwarded_metadata(error.trailing_metadata()))
