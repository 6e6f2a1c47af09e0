"""Runs the reconcile loop for the handlers, in a worker thread, and registers every kind's own trigger.

Whether a run is full (every child applied, the verdict on the spec recorded) or a refresh (status
from the caches) follows from the object itself: full when this process has not yet handled its
generation, which is the case once after it was created, after each change of its spec (the API
server counts a new generation), and once after the operator started. The record is kept here, in
memory, rather than in an annotation on every object (kopf's way): that write would cost each
object a request the API server validates in full, and a watch event back, for a fact the
generation already states.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import kopf

from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.handlers.pending import PENDING, Key, Work
from scaleml_operator.handlers.slots import Slots
from scaleml_operator.kube.client import dynamic_client
from scaleml_operator.reconcile import cache, driftmonitor, loop, modeldeployment, trainingjob


class Handled:
    """The generation of each object (by uid) that a full run of this process got through."""

    def __init__(self) -> None:
        self._generations: dict[str, int | None] = {}

    def due(self, body: Mapping[str, Any]) -> bool:
        meta = body["metadata"]
        return meta["uid"] not in self._generations or self._generations[meta["uid"]] != meta.get("generation")

    def done(self, body: Mapping[str, Any]) -> None:
        self._generations[body["metadata"]["uid"]] = body["metadata"].get("generation")

    def forget(self, uid: str) -> None:
        self._generations.pop(uid, None)


HANDLED: Final = Handled()


async def run(
    reconciler: loop.Reconciler[Any, Any],
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    kwargs: Mapping[str, Any],
    *,
    parent: kopf.Body | None = None,
) -> None:
    """One pass of the loop over the object, full or a refresh as HANDLED says; nothing if it is gone.

    `kwargs` are the handler's: kopf passes every index there by its id, and the reads use them
    (the rest is ignored). `parent` is the object itself, when the trigger is its own event;
    otherwise it is read from the watch's cache.
    """
    indexes = {key: value for key, value in kwargs.items() if isinstance(value, kopf.Index)}

    def current() -> Mapping[str, Any] | None:
        if parent is not None:
            return dict(parent)
        return cache.one(indexes, cache.PARENTS[reconciler.kind.kind], (namespace or "", name))

    body = current()
    if body is None:
        return
    slots: Slots = memo["slots"]
    async with slots.taken(full=HANDLED.due(body)):
        # A refresh reads the cache again once it has a thread: it may have waited for one a while.
        body = current()
        if body is None:
            return
        full = HANDLED.due(body)
        context = loop.Context(memo.get("config", OperatorConfig()), indexes, full=full)
        handled = await asyncio.to_thread(loop.run, reconciler, name, namespace or "", context, full=full, body=body)
    if full and handled:
        HANDLED.done(body)


def key(reconciler: loop.Reconciler[Any, Any], name: str, namespace: str | None) -> Key:
    return (reconciler.kind.kind, namespace or "", name)


def _work(
    reconciler: loop.Reconciler[Any, Any], name: str, namespace: str | None, memo: kopf.Memo, kwargs: Mapping[str, Any]
) -> Work:
    async def work(_failures: int) -> None:
        await run(reconciler, name, namespace, memo, kwargs)

    return work


def refresh_soon(
    reconciler: loop.Reconciler[Any, Any], name: str, namespace: str | None, memo: kopf.Memo, kwargs: Mapping[str, Any]
) -> None:
    """A run of the object a moment from now, for a change of one of its children or inputs (see handlers.pending)."""
    PENDING.later(key(reconciler, name, namespace), _work(reconciler, name, namespace, memo, kwargs))


async def run_now(
    reconciler: loop.Reconciler[Any, Any], name: str, namespace: str | None, memo: kopf.Memo, kwargs: Mapping[str, Any]
) -> None:
    """A run of the object at once (covering any pending one), retried later should it fail (see handlers.pending)."""
    await PENDING.now(key(reconciler, name, namespace), _work(reconciler, name, namespace, memo, kwargs))


@kopf.on.startup()
async def start_workers(memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config", OperatorConfig())
    # Each reconcile runs its blocking API calls in a thread of this pool: with asyncio's default of
    # a handful of threads, a thousand objects would queue for a thread rather than for the API server.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="reconcile")
    )
    # As many runs at once as the pool has threads: the rest wait for a slot, full runs first.
    memo["slots"] = Slots(config.workers)
    # Built now, before the first handlers need it at once.
    await asyncio.to_thread(dynamic_client)


def _register(reconciler: loop.Reconciler[Any, Any]) -> None:
    kind = reconciler.kind

    @instrumented(kind.kind)
    async def reconcile(
        name: str, namespace: str | None, memo: kopf.Memo, body: kopf.Body | None, **kwargs: Any
    ) -> None:
        await run(reconciler, name, namespace, memo, kwargs, parent=body)

    @kopf.on.event(*kind.group_version, id="reconcile")
    async def spec_changed(type: str | None, name: str, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
        if type == "DELETED":
            # Forgotten with the rest of what the process holds of the object (handlers.cache).
            return
        if not HANDLED.due(body):
            # The operator's own status writes, and the pods', come back here: nothing to do.
            return
        # kopf passes type None for the objects of its initial listing: they are resumed, not reactions.
        reason = {None: "resume", "ADDED": "create"}.get(type, "update")
        # kopf's own attempt count and reason are those of this event handler, which never fails.
        given = {key: value for key, value in kwargs.items() if key not in ("retry", "reason")}

        async def work(failures: int) -> None:
            # A retry reads the object anew from the cache: the event's copy may be old by then.
            parent = body if not failures else None
            await reconcile(name=name, namespace=namespace, body=parent, reason=reason, retry=failures, **given)

        await PENDING.now(key(reconciler, name, namespace), work)


RECONCILERS: Final = (trainingjob.RECONCILER, modeldeployment.RECONCILER, driftmonitor.RECONCILER)

for _reconciler in RECONCILERS:
    _register(_reconciler)
