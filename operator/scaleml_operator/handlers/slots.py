"""The reconcile threads, shared out: a run of an object's new generation goes before a refresh.

Every run holds one of the pool's threads while it talks to the API server. Under a wave of new
objects, their Jobs' and pods' events ask for refreshes of the objects already handled at the same
time, and in one first-come queue a new object waited behind all of them: the status of running
jobs was kept fresh at the price of the user's `kubectl apply` going unanswered. controller-runtime's
priority queue makes the same choice. Refreshes run whenever no full run waits (so a status may lag
while new objects keep every thread busy), and a refresh that waited covers every event before it
(handlers.pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator
from typing import Final

_FULL: Final = 0
_REFRESH: Final = 1


class Slots:
    """At most `capacity` runs at once; of the runs waiting, full ones first, then in the order they came.

    One per event loop: the operator makes its own at start-up, with its pool (handlers.loop).
    """

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def taken(self, *, full: bool) -> AsyncIterator[None]:
        await self._acquire(_FULL if full else _REFRESH)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: int) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                # The slot was handed over just as the run was cancelled: pass it on.
                self._release()
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, granted = heapq.heappop(self._waiting)
            if not granted.done():
                granted.set_result(None)
                return
        self._free += 1
