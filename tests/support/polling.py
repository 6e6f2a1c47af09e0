"""Poll for a condition with a deadline instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 60.0,
    message: str = "condition",
    *,
    interval: float = 0.1,
    max_interval: float = 1.0,
) -> T:
    """Call ``predicate`` until it returns a truthy value, and return that value.

    The interval starts at ``interval`` seconds and grows by half each round up to ``max_interval``.
    Exceptions raised by the predicate propagate. On timeout an ``AssertionError`` names ``message``
    and the last value seen.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {message}; last value: {value!r}")
        time.sleep(min(delay, remaining))
        delay = min(delay * 1.5, max_interval)
