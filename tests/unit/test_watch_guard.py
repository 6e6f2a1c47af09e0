"""The guard that stops a deaf operator, on real asyncio tasks named as kopf names its watches."""

from __future__ import annotations

import asyncio

from scaleml_operator import watch_guard


async def _watch(fail_after: float | None) -> None:
    if fail_after is None:
        await asyncio.Event().wait()  # watches forever, until cancelled
    await asyncio.sleep(fail_after or 0)
    raise RuntimeError("403 Forbidden")


def _start(name: str, fail_after: float | None = None) -> asyncio.Task[None]:
    return asyncio.create_task(_watch(fail_after), name=name)


def test_a_watch_that_fails_stops_the_operator_and_is_named() -> None:
    async def scenario() -> tuple[list[str], bool]:
        stop = asyncio.Event()
        healthy = _start("watcher for trainingjobs.v1alpha1.scaleml.dev@None")
        _start("watcher for jobs.v1.batch@None", fail_after=0.05)
        lost = await asyncio.wait_for(watch_guard.guard(stop, check_seconds=0.01), 5)
        healthy.cancel()
        return lost, stop.is_set()

    assert asyncio.run(scenario()) == (["watcher for jobs.v1.batch@None"], True)


def test_watches_cancelled_by_kopf_and_other_tasks_that_fail_are_not_faults() -> None:
    async def scenario() -> list[str]:
        stop = asyncio.Event()
        cancelled = _start("watcher for deployments.v1.apps@None")
        other = asyncio.create_task(_watch(fail_after=0.01), name="a handler's task")
        guard = asyncio.create_task(watch_guard.guard(stop, check_seconds=0.01))
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
        return await asyncio.wait_for(watch_guard.guard(asyncio.Event(), check_seconds=0.01), 5)

    assert asyncio.run(scenario()) == ["peering keep-alive for scaleml@None"]
