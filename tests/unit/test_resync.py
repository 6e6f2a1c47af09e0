"""The periodic resync shares the operator's event loop: with nothing to resync it must still let the loop run;
the sweep for children deleted by hand runs their owners in full."""

from __future__ import annotations

import asyncio
import threading

import kopf
import pytest

from scaleml_operator.builders.meta import Owner
from scaleml_operator.handlers import resync as resync_module
from scaleml_operator.handlers.loop import HANDLED
from scaleml_operator.handlers.resync import resync, sweep
from scaleml_operator.reconcile import cache, vanished
from scaleml_operator.reconcile.known import Child


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


def test_the_sweep_runs_in_full_the_owners_of_children_deleted_by_hand_and_not_the_deleted_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    there, deleted = Owner("TrainingJob", "a", "ml", "uid-a"), Owner("TrainingJob", "b", "ml", "uid-b")
    gone = {owner: [Child(owner, "ConfigMap", f"{owner.name}-config", "cm")] for owner in (there, deleted)}
    monkeypatch.setattr(vanished, "sweep", lambda cluster_wide: gone)
    ran: list[str] = []
    monkeypatch.setattr(resync_module, "refresh_soon", lambda reconciler, name, *_: ran.append(name))
    # Only `a` is still there (and handled at its generation); `b` went, its children with it.
    body = {"metadata": {"uid": there.uid, "name": "a", "namespace": "ml", "generation": 1}}
    indexes: dict[str, dict[object, object]] = {index: {} for index in cache.PARENTS.values()}
    indexes[cache.PARENTS["TrainingJob"]][("ml", "a")] = [body]
    HANDLED.done(body)

    async def one_sweep() -> None:
        task = asyncio.create_task(sweep(kopf.Memo(), indexes, period=0.01))
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(one_sweep())
    assert set(ran) == {"a"}
    # Its next run is a full one, which applies every child again.
    assert HANDLED.due(body)
