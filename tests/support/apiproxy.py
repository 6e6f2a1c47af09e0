"""A loopback proxy in front of the test kube-apiserver that records every request a client makes.

A client (the operator) pointed at :attr:`RecordingProxy.server` talks plain HTTP to 127.0.0.1; the proxy
forwards each request, headers and bearer token included, to the API server over TLS and streams the answer
back as it comes, so that watches work as they do directly. What the API server was asked is then in
:meth:`RecordingProxy.requests`: the test sees the operator's requests, not what the operator says it did.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

import aiohttp
import yaml
from aiohttp import web

__all__ = ["RecordedRequest", "RecordingProxy", "recording_proxy"]

# Hop-by-hop headers (RFC 9110) and those the proxy's own framing replaces.
_NOT_FORWARDED: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer", "content-length", "host"}
)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]

    @property
    def watch(self) -> bool:
        return self.query.get("watch", [""])[0] in ("true", "1")

    @property
    def label_selector(self) -> str | None:
        values = self.query.get("labelSelector")
        return values[0] if values else None


class RecordingProxy:
    def __init__(self, upstream: str, ca_file: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._recorded: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="recording-proxy", daemon=True)

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._recorded)

    def kubeconfig(self, path: Path, token: str) -> Path:
        """A kubeconfig that authenticates with `token`, through the proxy."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.server}}],
            "users": [{"name": "proxied", "user": {"token": token}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxied"}}],
            "current-context": "proxy",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(timeout=30) or self._error is not None:
            raise RuntimeError(f"the recording proxy did not start: {self._error!r}")

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # reported to start(), or ends the thread after a stop
            self._error = error
            self._started.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        # No total timeout: watches stay open for minutes.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:

            async def handle(request: web.Request) -> web.StreamResponse:
                return await self._forward(session, request)

            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            self.port = int(listener.getsockname()[1])
            await web.SockSite(runner, listener).start()
            self._started.set()
            try:
                await self._stopping.wait()
            finally:
                await runner.cleanup()

    async def _forward(self, session: aiohttp.ClientSession, request: web.Request) -> web.StreamResponse:
        url = urlsplit(str(request.rel_url))
        with self._lock:
            self._recorded.append(RecordedRequest(request.method, url.path, parse_qs(url.query)))
        headers = {key: value for key, value in request.headers.items() if key.lower() not in _NOT_FORWARDED}
        body = await request.read()
        async with session.request(
            request.method,
            self.upstream + str(request.rel_url),
            headers=headers,
            data=body or None,
            # Sent as it came: the Kubernetes client posts JSON without a Content-Type, which the API
            # server reads as JSON, and aiohttp's default application/octet-stream it refuses.
            skip_auto_headers=() if "Content-Type" in request.headers else ("Content-Type",),
            ssl=self._context,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _NOT_FORWARDED:
                    response.headers.add(key, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


@contextmanager
def recording_proxy(upstream: str, ca_file: Path) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(upstream, ca_file)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
