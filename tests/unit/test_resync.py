"""The periodic resync shares the operator's event loop: with nothing to resync it must still let the loop run;
the sweep for children deleted by hand runs their owners in full."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import kopf
import pytest

from scaleml_operator.builders.meta import Owner
from scaleml_operator.handlers import resync as resync_module
from scaleml_operator.handlers.loop import HANDLED
from scaleml_operator.handlers.resync import resync, sweep
from scaleml_operator.reconcile import cache, vanished
from scaleml_operator.reconcile.known import Child
from scaleml_operator.reconcile.terminating import Terminating


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
    monkeypatch.setattr(resync_module, "run_now", _recorded(ran))
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


def _recorded(ran: list[str]) -> Callable[..., Coroutine[Any, Any, None]]:
    """A run at once that only records the object's name."""

    async def run_now(reconciler: object, name: str, *_: object) -> None:
        ran.append(name)

    return run_now


def test_the_sweep_leaves_the_objects_of_a_namespace_being_deleted_to_go_with_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting a namespace deletes the children before their owners: that is no deletion by hand."""
    owners = [Owner("TrainingJob", name, "going", f"uid-{name}") for name in ("a", "b", "c")]
    owners.append(Owner("TrainingJob", "d", "staying", "uid-d"))
    gone = {owner: [Child(owner, "ConfigMap", f"{owner.name}-config", "cm")] for owner in owners}
    # Reported once: the sweep forgets the children it found gone.
    found = iter([gone])
    monkeypatch.setattr(vanished, "sweep", lambda cluster_wide: next(found, {}))
    seen = Terminating(time.time)
    monkeypatch.setattr(resync_module, "TERMINATING", seen)
    ran: list[str] = []
    monkeypatch.setattr(resync_module, "refresh_soon", lambda reconciler, name, *_: ran.append(name))

    async def run_now(reconciler: object, name: str, namespace: str, *_: object) -> None:
        ran.append(name)
        if namespace == "going":
            # The API server refuses the write: "going" is being deleted ("staying" is not).
            seen.refused(namespace)

    monkeypatch.setattr(resync_module, "run_now", run_now)
    indexes: dict[str, dict[object, object]] = {index: {} for index in cache.PARENTS.values()}
    for owner in owners:
        meta = {"uid": owner.uid, "name": owner.name, "namespace": owner.namespace, "generation": 1}
        indexes[cache.PARENTS["TrainingJob"]][(owner.namespace, owner.name)] = [
            {"metadata": {**meta, "creationTimestamp": "2026-12-06T00:00:00Z"}}
        ]

    async def one_sweep() -> None:
        task = asyncio.create_task(sweep(kopf.Memo(), indexes, period=0.01))
        await asyncio.sleep(0.1)
        task.cancel()

    with caplog.at_level(logging.INFO, logger=resync_module.__name__):
        asyncio.run(one_sweep())
    # One owner of the terminating namespace tried (and was refused); its others were left alone.
    assert sorted(ran) == ["a", "d"]
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1, said
    assert said[0].startswith("TrainingJob staying/d:"), said
