"""Runs the reconcile loop for a kopf handler, in a worker thread, and registers every kind's spec trigger."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.reconcile import driftmonitor, loop, modeldeployment, trainingjob


async def run(
    reconciler: loop.Reconciler[Any, Any],
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    *,
    full: bool,
    **kwargs: Any,
) -> None:
    """One pass of the loop; kopf retries it when the object kept changing under the status write.

    `kwargs` are the handler's: kopf passes every index there by its id, and the reads may use them.
    """
    indexes = {key: value for key, value in kwargs.items() if isinstance(value, kopf.Index)}
    context = loop.Context(memo.get("config", OperatorConfig()), indexes)
    try:
        await asyncio.to_thread(loop.run, reconciler, name, namespace or "", context, full=full)
    except loop.StatusConflictError as error:
        raise kopf.TemporaryError(str(error), delay=1) from error


def _register(reconciler: loop.Reconciler[Any, Any]) -> None:
    kind = reconciler.kind

    @kopf.on.resume(*kind.group_version, id="reconcile")
    @kopf.on.create(*kind.group_version, id="reconcile")
    @kopf.on.update(*kind.group_version, id="reconcile", field="spec")
    @instrumented(kind.kind)
    async def reconcile(name: str, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
        await run(reconciler, name, namespace, memo, full=True, **kwargs)


# Every kind's own trigger: created, resumed after a restart, or its spec changed (a new generation).
for _reconciler in (trainingjob.RECONCILER, modeldeployment.RECONCILER, driftmonitor.RECONCILER):
    _register(_reconciler)
