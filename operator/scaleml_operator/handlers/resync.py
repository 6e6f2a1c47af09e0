"""The periodic resync: every object's status recomputed from the watches' caches, so that no change is lost.

kopf does not retry a watch-event handler that failed: a Job's last transition whose status write
the API server refused (a restart, a timeout) would leave its TrainingJob's status stale until some
later event, which may never come. So, once per `--resync-seconds`, every object of every kind is
refreshed, one after the other and spread evenly over the period (from a random start, so replicas
and restarts do not fall into step). A refresh reads only the caches and writes only what changed:
when nothing did, a resync costs the API server no request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

import kopf

from scaleml_operator.handlers.loop import RECONCILERS, run
from scaleml_operator.reconcile import cache

log = logging.getLogger(__name__)


async def resync(memo: kopf.Memo, indexes: Mapping[str, Any], period: float) -> None:
    await asyncio.sleep(random.uniform(0, period))
    while True:
        due = [
            (reconciler, namespace, name)
            for reconciler in RECONCILERS
            for namespace, name in list(indexes[cache.PARENTS[reconciler.kind.kind]].keys())
        ]
        if not due:
            # Nothing to resync yet: a pass that never awaits would hold the event loop forever.
            await asyncio.sleep(period)
            continue
        spacing = period / len(due)
        for reconciler, namespace, name in due:
            try:
                await run(reconciler, name, namespace, memo, indexes)
            except Exception as error:
                log.warning("Resync of %s %s/%s failed: %s", reconciler.kind.kind, namespace, name, error)
            await asyncio.sleep(spacing)
