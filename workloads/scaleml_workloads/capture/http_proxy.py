"""The HTTP side of the capture proxy: Triton's KServe v2 REST protocol, streamed through untouched.

Every method and path goes to Triton through one pooled client session, and Triton's answer
comes back as it was: status, headers (Content-Type, Content-Encoding,
Inference-Header-Content-Length, ...) and body, compressed bodies still compressed. Bodies are
streamed, both ways, in chunks: whatever their size, the proxy holds a chunk of each at a time.
A request body larger than `Limits.max_body_bytes` is refused with 413 (before it is read when its
Content-Length says so). Only a successful `POST /v2/models/{name}[/versions/{version}]/infer`
is captured, when the sampling draws it: a copy of its request and response bodies is kept while
they stream through, as long as each is at most `Limits.max_sample_bytes`; a larger one goes to
Triton and back untouched, and its sample is dropped (and counted, reason too_large). When Triton
cannot be reached, clients get 502.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from scaleml_workloads.capture import metrics
from scaleml_workloads.capture.kserve import HEADER_LENGTH, HttpBody, HttpExchange
from scaleml_workloads.capture.limits import Limits
from scaleml_workloads.capture.writer import CaptureWriter

log = logging.getLogger(__name__)

# Bodies pass through in chunks of at most this much.
_CHUNK_BYTES: Final = 256 * 1024
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


def _forwarded_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in _NOT_FORWARDED)


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


class HttpProxy:
    """The HTTP server and its session to Triton; `writer` receives the successful inferences."""

    def __init__(self, upstream: str, writer: CaptureWriter, grace: float, limits: Limits) -> None:
        self.upstream = upstream
        self.writer = writer
        self.grace = grace
        self.limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, port: int) -> None:
        """Listens on every interface."""
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
        await web.TCPSite(self._runner, port=port).start()

    async def stop(self) -> None:
        """Stops listening, lets requests in flight finish (`grace` s at most), closes the session."""
        assert self._runner is not None
        assert self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _http(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        started = time.perf_counter()
        timestamp = time.time()
        limits = self.limits
        declared = request.content_length
        if declared is not None and declared > limits.max_body_bytes:
            return _counted(_too_large(declared, limits.max_body_bytes), started, 0.0)
        match = _INFER_PATH.fullmatch(request.path) if request.method == hdrs.METH_POST else None
        # Drawn before the body streams: a request that is not sampled is never copied.
        sampled = match is not None and self.writer.sampled()
        request_copy = _Copy(limits.max_sample_bytes, sampled)
        response_copy = _Copy(limits.max_sample_bytes, sampled)
        headers = _forwarded_headers(request.headers)
        if request.body_exists and declared is not None:
            headers[hdrs.CONTENT_LENGTH] = str(declared)
        body = self._request_body(request, request_copy) if request.body_exists else None
        url = URL(f"http://{self.upstream}{request.raw_path}", encoded=True)
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
                return _counted(_too_large(request_copy.size, limits.max_body_bytes), started, upstream)
            if response is not None and response.prepared:
                # Triton's answer broke off half-way: so does ours, rather than end it as if complete.
                log.warning("the answer of Triton at %s broke off: %s", self.upstream, error)
                response.force_close()
                if request.transport is not None:
                    request.transport.close()
                return _counted(response, started, upstream)
            failed = web.Response(status=502, text=f"Triton at {self.upstream} is unreachable: {error}\n")
            return _counted(failed, started, upstream)
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
        return _counted(response, started, upstream)

    async def _request_body(self, request: web.Request, copy: _Copy) -> AsyncIterator[bytes]:
        """The client's body as it arrives, copied into `copy`; ends the upload past `max_body_bytes`."""
        async for chunk in request.content.iter_chunked(_CHUNK_BYTES):
            copy.add(chunk)
            if copy.size > self.limits.max_body_bytes:
                raise _BodyTooLargeError(f"the request body passed {self.limits.max_body_bytes} bytes")
            yield chunk


def _counted(response: web.StreamResponse, started: float, upstream: float) -> web.StreamResponse:
    metrics.count_request("http", str(response.status), time.perf_counter() - started - upstream)
    return response


def _too_large(size: int, limit: int) -> web.Response:
    return web.Response(
        status=413, text=f"the request body of {size} bytes is larger than the {limit} bytes the proxy forwards\n"
    )
