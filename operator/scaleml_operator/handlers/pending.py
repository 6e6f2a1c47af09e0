"""Runs of the loop put off a moment, at most one per object: a burst of events is one run, a failed run runs again.

A Job that starts reports itself created, active and ready within a second, and each of its pods
as many times: run at once, every one of those events would cost a status write of its parent
(a request the API server validates against the kind's schema, and a watch event back). Put off
for `COALESCE_SECONDS` (what Kubernetes' own Job controller waits to batch a Job's pod events),
they cost one, composed from what the caches hold by then. A run that raised is due again after
a backoff that doubles up to `RETRY_MAX_SECONDS`, and sooner if another event asks for it: kopf
never retries an event handler, so without this a transition whose status write failed would
wait for the periodic resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from scaleml_operator.kube.apply import api_message
from scaleml_operator.reconcile.loop import StatusConflictError

log = logging.getLogger(__name__)

COALESCE_SECONDS: Final = 1.0
RETRY_FIRST_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 60.0

_TRANSIENT: Final = (ApiException, HTTPError, OSError, StatusConflictError)

# (kind, namespace, name) of the object a run is for.
Key = tuple[str, str, str]
# One attempt of a run; its argument is the number of attempts that failed before it.
Work = Callable[[int], Awaitable[None]]


def backoff(failures: int) -> float:
    """Seconds to wait after the `failures`-th failure in a row."""
    return float(min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (failures - 1)))


@dataclass
class _Timer:
    due: float
    handle: asyncio.TimerHandle
    work: Work


class Pending:
    """The runs due later, by object, on the running event loop."""

    def __init__(self) -> None:
        self._timers: dict[Key, _Timer] = {}
        self._failures: dict[Key, int] = {}
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._timers)

    def later(self, key: Key, work: Work, delay: float = COALESCE_SECONDS) -> None:
        """Runs `work` for `key` after `delay`, unless a run of it is due sooner already.

        The run reads the caches when it starts, so one pending run covers every event before it.
        """
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer.due <= due:
                return
            timer.handle.cancel()
        self._timers[key] = _Timer(due, loop.call_at(due, self._start, key), work)

    async def now(self, key: Key, work: Work) -> None:
        """Runs `work` for `key` at once; should it fail, it runs again later."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            # This run covers what the pending one was for.
            timer.handle.cancel()
        await self._attempt(key, work)

    def _start(self, key: Key) -> None:
        timer = self._timers.pop(key)
        task = asyncio.get_running_loop().create_task(self._attempt(key, timer.work))
        # The loop keeps only weak references to tasks: hold each until it is done.
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _attempt(self, key: Key, work: Work) -> None:
        failures = self._failures.get(key, 0)
        try:
            await work(failures)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failures = self._failures[key] = failures + 1
            delay = backoff(failures)
            # The API server's refusals and absences are said in a line; anything else is a fault to trace.
            trace = not isinstance(error, _TRANSIENT)
            log.warning("%s %s/%s: %s; trying again in %.0f s.", *key, said(error), delay, exc_info=trace)
            self.later(key, work, delay)
        else:
            self._failures.pop(key, None)


def said(error: Exception) -> str:
    """The error in a log line: an API error's text carries the response's headers and body, where its
    status and the API server's message say enough (and say why: "denied by policy X: ...")."""
    if isinstance(error, ApiException):
        return f"{type(error).__name__} {error.status}: {api_message(error)}"
    return str(error) or type(error).__name__


PENDING: Final = Pending()
