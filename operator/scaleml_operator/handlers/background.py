"""The operator's background tasks, started with it and ended before it stops: the periodic resync
and the sweep for children deleted by hand (handlers.resync), the release of memory once a wave of
deletions has ended (memory), and the check that the admission policy still keeps the operator off
others' objects (kube.admission)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import kopf

from scaleml_operator import memory
from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.resync import resync, sweep
from scaleml_operator.kube.admission import GUARD

log = logging.getLogger(__name__)

_TASKS: Final = "background-tasks"
# How often the release looks whether deletions have stopped: memory goes back 5 to 10 s after the last.
RELEASE_CHECK_SECONDS: Final = 5.0


async def release_after_deletions(check_seconds: float) -> None:
    while True:
        await asyncio.sleep(check_seconds)
        if memory.DELETIONS.settled():
            try:
                await asyncio.to_thread(memory.release)
            except Exception as error:  # a failed release is worth a line, not the end of the task
                log.warning("Could not give memory back: %s", error)


async def recheck_admission(period: float) -> None:
    while True:
        await asyncio.sleep(period)
        await asyncio.to_thread(GUARD.check)


@kopf.on.startup()
async def start_background(memo: kopf.Memo, **kwargs: Any) -> None:
    config: OperatorConfig = memo.get("config", OperatorConfig())
    # Before the first reconcile: whether a child not seen yet must be read before it is applied.
    await asyncio.to_thread(GUARD.check)
    # kopf hands the startup handlers its indexes, empty at first; they fill as the watches start.
    indexes = {key: value for key, value in kwargs.items() if isinstance(value, kopf.Index)}
    memo[_TASKS] = [
        asyncio.create_task(resync(memo, indexes, config.resync_seconds), name="resync"),
        asyncio.create_task(sweep(memo, indexes, config.resync_seconds), name="children sweep"),
        asyncio.create_task(release_after_deletions(RELEASE_CHECK_SECONDS), name="memory release"),
        asyncio.create_task(recheck_admission(config.resync_seconds), name="admission check"),
    ]


@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    tasks: list[asyncio.Task[None]] = memo.get(_TASKS, [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
