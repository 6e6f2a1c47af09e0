"""Stopping a long-running process cleanly: SIGTERM (the kubelet, `kill`) and SIGINT (Ctrl-C) set an event."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType


def stop_on_signals(log: logging.Logger, stopping: str) -> threading.Event:
    """An event that SIGTERM or SIGINT sets, each logged as `signal N: <stopping>`; call from the main thread."""
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: %s", signum, stopping)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop
