"""The proxy: Triton's KServe v2 protocol over HTTP and gRPC, forwarded to the local server untouched.

`http_proxy` serves HTTP, bodies streamed through in chunks; `grpc_proxy` serves gRPC, whole
messages within a budget of memory; `limits` bounds what both take from clients. Only a successful
inference is offered to the capture, and the capture is never on the path: offering returns at
once, and everything after happens in the writer's thread. When Triton cannot be reached, HTTP
clients get 502 and gRPC clients the channel's UNAVAILABLE.
"""

from __future__ import annotations

import asyncio

from scaleml_workloads.capture.grpc_proxy import GrpcProxy
from scaleml_workloads.capture.http_proxy import HttpProxy
from scaleml_workloads.capture.limits import DEFAULT_LIMITS, Limits
from scaleml_workloads.capture.writer import CaptureWriter


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
        self.http = HttpProxy(upstream_http, writer, grace, limits)
        self.grpc = GrpcProxy(upstream_grpc, writer, grace, limits)

    async def start(self, http_port: int, grpc_port: int) -> None:
        """Listens on every interface."""
        await self.grpc.start(grpc_port)
        await self.http.start(http_port)

    async def stop(self) -> None:
        """Stops listening, lets requests in flight finish, closes the connections to Triton."""
        await asyncio.gather(self.grpc.stop(), self.http.stop())
