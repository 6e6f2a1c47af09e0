"""Free TCP ports on 127.0.0.1 for the processes the tests start: the one `free_port` of the test suite."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now; the caller's process binds it next (a race the tests accept)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
