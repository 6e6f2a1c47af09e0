"""Runs the reconcile loop for a kopf handler, in a worker thread, and registers every kind's spec trigger."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import kopf

from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.kube.apply import dynamic_client
from scaleml_operator.reconcile import driftmonitor, loop, modeldeployment, trainingjob


async def run(
    reconciler: loop.Reconciler[Any, Any],
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    kwargs: Mapping[str, Any],
    *,
    full: bool,
    parent: kopf.Body | None = None,
) -> None:
    """One pass of the loop; kopf retries it when the object kept changing under the status write.

    `kwargs` are the handler's: kopf passes every index there by its id, and the reads use them
    (the rest is ignored). `parent` is the object itself, when the trigger is its own event.
    """
    indexes = {key: value for key, value in kwargs.items() if isinstance(value, kopf.Index)}
    context = loop.Context(memo.get("config", OperatorConfig()), indexes)
    body = dict(parent) if parent is not None else None
    try:
        await asyncio.to_thread(loop.run, reconciler, name, namespace or "", context, full=full, body=body)
    except loop.StatusConflictError as error:
        raise kopf.TemporaryError(str(error), delay=1) from error


@kopf.on.startup()
async def start_workers(memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.get("config", OperatorConfig())
    # Each reconcile runs its blocking API calls in a thread of this pool: with asyncio's default of
    # a handful of threads, a thousand objects would queue for a thread rather than for the API server.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="reconcile")
    )
    # Built now, before the first handlers need it at once.
    await asyncio.to_thread(dynamic_client)


def _register(reconciler: loop.Reconciler[Any, Any]) -> None:
    kind = reconciler.kind

    @kopf.on.resume(*kind.group_version, id="reconcile")
    @kopf.on.create(*kind.group_version, id="reconcile")
    @kopf.on.update(*kind.group_version, id="reconcile", field="spec")
    @instrumented(kind.kind)
    async def reconcile(name: str, namespace: str | None, memo: kopf.Memo, body: kopf.Body, **kwargs: Any) -> None:
        await run(reconciler, name, namespace, memo, kwargs, full=True, parent=body)


RECONCILERS: Final = (trainingjob.RECONCILER, modeldeployment.RECONCILER, driftmonitor.RECONCILER)

# Every kind's own trigger: created, resumed after a restart, or its spec changed (a new generation).
for _reconciler in RECONCILERS:
    _register(_reconciler)
