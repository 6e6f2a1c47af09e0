"""The periodic resync shares the operator's event loop: with nothing to resync it must still let the loop run."""

from __future__ import annotations

import asyncio
import threading

import kopf

from scaleml_operator.handlers.resync import resync
from scaleml_operator.reconcile import cache


def test_a_resync_with_no_objects_leaves_the_event_loop_to_the_rest() -> None:
    indexes: dict[str, dict[object, object]] = {index: {} for index in cache.PARENTS.values()}
    ticks: list[int] = []

    async def alongside() -> None:
        task = asyncio.create_task(resync(kopf.Memo(), indexes, period=0.01))
        for tick in range(5):
            await asyncio.sleep(0.02)
            ticks.append(tick)
        task.cancel()

    # In a thread of its own: a resync that never awaits would hold this loop (and the test) forever.
    runner = threading.Thread(target=asyncio.run, args=(alongside(),), daemon=True)
    runner.start()
    runner.join(timeout=10)
    assert ticks == [0, 1, 2, 3, 4]
