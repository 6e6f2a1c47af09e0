"""The operator's background tasks, started with it and ended before it stops: the periodic resync
and the sweep for children deleted by hand (handlers.resync), the release of memory once a wave of
deletions has ended, or of the whole process when that is not enough (memory), and the check that
the admission policy still keeps the operator off others' objects (kube.admission).

`scaleml operator` puts its stop flag in the memo as "stop": the memory task sets it to have kopf
stop before the process is replaced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

import kopf

from scaleml_operator import memory, watch_guard
from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.resync import resync, sweep
from scaleml_operator.kube.admission import GUARD

log = logging.getLogger(__name__)

_TASKS: Final = "background-tasks"
# How often the release looks whether deletions have stopped: memory goes back 5 to 10 s after the last.
RELEASE_CHECK_SECONDS: Final = 5.0
# How the log line that announces a replaced process begins (the bench and the tests look for it).
REPLACING: Final = "Replacing the process to give back memory"


def _held(indexes: Mapping[str, kopf.Index[Any, Any]]) -> int:
    """How many objects the watches' caches hold: ScaleML's, their Jobs and Deployments, and the owners of pods."""
    return sum(len(index) for index in indexes.values())


async def release_after_deletions(
    check_seconds: float,
    indexes: Mapping[str, kopf.Index[Any, Any]],
    recycle_above_mib: float,
    stop: asyncio.Event | None,
) -> None:
    """Gives memory back once a wave of deletions has ended, and asks for a fresh process when that is not enough.

    The start-up size is taken here, before the watches have delivered any object. Without a stop
    flag (kopf run another way than by `scaleml operator`: a test's KopfRunner) there is no replacing.
    """
    start_mib = memory.resident_mib()
    wave = memory.Wave()
    while True:
        await asyncio.sleep(check_seconds)
        held = _held(indexes)
        if not wave.ended(held):
            continue
        try:
            resident_mib = await asyncio.to_thread(memory.release)
        except Exception as error:  # a failed release is worth a line, not the end of the task
            log.warning("Could not give memory back: %s", error)
            continue
        if resident_mib is None or start_mib is None or stop is None:
            continue
        footprint = memory.Footprint(resident_mib, start_mib, held, wave.peak)
        if memory.worth_replacing(footprint, recycle_above_mib):
            log.info(
                "%s: resident %.0f MiB, %.0f at start-up; %d objects cached, at most %d",
                REPLACING,
                resident_mib,
                start_mib,
                held,
                wave.peak,
            )
            memory.REPLACEMENT.ask(watch_guard.DEADLINE_SECONDS)
            stop.set()
            return


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
        asyncio.create_task(
            release_after_deletions(RELEASE_CHECK_SECONDS, indexes, config.recycle_above_mib, memo.get("stop")),
            name="memory release",
        ),
        asyncio.create_task(recheck_admission(config.resync_seconds), name="admission check"),
    ]


@kopf.on.cleanup()
async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    tasks: list[asyncio.Task[None]] = memo.get(_TASKS, [])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
