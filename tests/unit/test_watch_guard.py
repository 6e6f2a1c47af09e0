"""The guard that stops a deaf operator, on real asyncio tasks named as kopf names its watches."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine

from scaleml_operator import watch_guard


async def _watch(fail_after: float | None) -> None:
    if fail_after is None:
        await asyncio.Event().wait()  # watches forever, until cancelled
    await asyncio.sleep(fail_after or 0)
    raise RuntimeError("403 Forbidden")


def _guard(stop: asyncio.Event, ended: list[list[str]]) -> Coroutine[None, None, list[str]]:
    """The guard, fast, with a deadline that records instead of ending the test's process."""
    return watch_guard.guard(stop, check_seconds=0.01, deadline_seconds=0.1, at_deadline=ended.append)


def _start(name: str, fail_after: float | None = None) -> asyncio.Task[None]:
    return asyncio.create_task(_watch(fail_after), name=name)


def test_a_watch_that_fails_stops_the_operator_and_is_named_and_a_stuck_shutdown_ends_at_the_deadline() -> None:
    ended: list[list[str]] = []

    async def scenario() -> tuple[list[str], bool]:
        stop = asyncio.Event()
        healthy = _start("watcher for trainingjobs.v1alpha1.scaleml.dev@None")
        _start("watcher for jobs.v1.batch@None", fail_after=0.05)
        lost = await asyncio.wait_for(_guard(stop, ended), 5)
        healthy.cancel()
        assert ended == []  # kopf has the deadline's time to stop by itself
        await asyncio.sleep(0.3)  # it does not
        return lost, stop.is_set()

    assert asyncio.run(scenario()) == (["watcher for jobs.v1.batch@None"], True)
    assert ended == [["watcher for jobs.v1.batch@None"]]


def test_watches_cancelled_by_kopf_and_other_tasks_that_fail_are_not_faults() -> None:
    async def scenario() -> list[str]:
        stop = asyncio.Event()
        cancelled = _start("watcher for deployments.v1.apps@None")
        other = asyncio.create_task(_watch(fail_after=0.01), name="a handler's task")
        guard = asyncio.create_task(_guard(stop, []))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        await asyncio.sleep(0.05)
        assert isinstance(other.exception(), RuntimeError)
        assert not guard.done()  # still guarding
        stop.set()  # the operator stops for another reason
        return await asyncio.wait_for(guard, 5)

    assert asyncio.run(scenario()) == []


def test_a_replica_whose_peering_keep_alive_failed_stops_too() -> None:
    async def scenario() -> list[str]:
        _start("peering keep-alive for scaleml@None", fail_after=0.01)
        return await asyncio.wait_for(_guard(asyncio.Event(), []), 5)

    assert asyncio.run(scenario()) == ["peering keep-alive for scaleml@None"]
