"""Runs the reconcile loop for a kopf handler: in a worker thread, with the operator's settings."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from scaleml_operator.config import OperatorConfig
from scaleml_operator.reconcile import loop


async def run(
    reconciler: loop.Reconciler[Any, Any],
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    *,
    full: bool,
    indexes: Mapping[str, Any] | None = None,
) -> None:
    """One pass of the loop; kopf retries it when the object kept changing under the status write."""
    context = loop.Context(memo.get("config", OperatorConfig()), indexes or {})
    try:
        await asyncio.to_thread(loop.run, reconciler, name, namespace or "", context, full=full)
    except loop.StatusConflictError as error:
        raise kopf.TemporaryError(str(error), delay=1) from error
