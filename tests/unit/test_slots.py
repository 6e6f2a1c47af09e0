"""The reconcile threads, shared out: never more runs than threads, and a new object's run before refreshes."""

from __future__ import annotations

import asyncio

from scaleml_operator.handlers.slots import Slots


async def _run(slots: Slots, name: str, full: bool, order: list[str], release: asyncio.Event) -> None:
    async with slots.taken(full=full):
        order.append(name)
        await release.wait()


def test_waiting_full_runs_go_before_waiting_refreshes_and_each_kind_in_the_order_it_came() -> None:
    order: list[str] = []

    async def scenario() -> None:
        slots, release = Slots(1), asyncio.Event()
        holder = asyncio.create_task(_run(slots, "holder", False, order, release))
        await asyncio.sleep(0)
        waiting = [
            asyncio.create_task(_run(slots, name, full, order, release))
            for name, full in (("refresh-1", False), ("full-1", True), ("refresh-2", False), ("full-2", True))
        ]
        await asyncio.sleep(0.01)
        assert order == ["holder"]  # one slot: the others wait
        release.set()
        await asyncio.gather(holder, *waiting)

    asyncio.run(scenario())
    assert order == ["holder", "full-1", "full-2", "refresh-1", "refresh-2"]


def test_never_more_runs_at_once_than_slots() -> None:
    running, most = 0, 0

    async def work(slots: Slots, full: bool) -> None:
        nonlocal running, most
        async with slots.taken(full=full):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001)
            running -= 1

    async def scenario() -> None:
        slots = Slots(3)
        await asyncio.gather(*(work(slots, i % 2 == 0) for i in range(40)))

    asyncio.run(scenario())
    assert most == 3


def test_a_run_cancelled_while_it_waits_or_runs_gives_its_slot_back() -> None:
    async def scenario() -> list[str]:
        order: list[str] = []
        slots, hold, free = Slots(1), asyncio.Event(), asyncio.Event()
        free.set()
        holder = asyncio.create_task(_run(slots, "holder", True, order, hold))
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(_run(slots, "cancelled", True, order, free))
        later = asyncio.create_task(_run(slots, "later", False, order, free))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        holder.cancel()  # a run that fails or is cancelled mid-way releases too
        await asyncio.gather(holder, cancelled, return_exceptions=True)
        await asyncio.wait_for(later, timeout=1)
        await asyncio.wait_for(_run(slots, "after", True, order, free), timeout=1)
        return order

    assert asyncio.run(scenario()) == ["holder", "later", "after"]
