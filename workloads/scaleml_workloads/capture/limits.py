"""What the capture proxy takes from clients, over HTTP and gRPC alike: the sizes that bound its memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MIB: Final = 1024 * 1024
# A gRPC message is held up to three times while it is forwarded: gRPC's buffer of it as received,
# the bytes here, and gRPC's buffer of it on its way to Triton.
GRPC_COPIES: Final = 3


@dataclass(frozen=True)
class Limits:
    """What the proxy takes: the sizes that keep it within its memory limit whatever clients send.

    HTTP bodies stream, so `max_body_bytes` bounds what reaches Triton (which holds a whole body),
    not the proxy. `max_sample_bytes` bounds what one sample copies and decodes. gRPC messages are
    held whole: at most `max_grpc_message_bytes` each, and `max_grpc_inflight_bytes` of memory for
    the client messages of every call together (each counted GRPC_COPIES times its size, and the
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
