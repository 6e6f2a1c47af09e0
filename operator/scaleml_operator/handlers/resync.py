"""The periodic resync: every object's status recomputed from the watches' caches, so that no change is lost.

kopf does not retry a watch-event handler that failed: a Job's last transition whose status write
the API server refused (a restart, a timeout) would leave its TrainingJob's status stale until some
later event, which may never come. So, once per `--resync-seconds`, every object of every kind is
refreshed, one after the other and spread evenly over the period (from a random start, so replicas
and restarts do not fall into step). A refresh reads only the caches and writes only what changed:
when nothing did, a resync costs the API server no request.

A child the cluster's admission denied (ChildDenied: a quota used up, a policy) is tried again here:
the object's run in the resync is a full one, which applies every child again, once per period.

Once per period too, the children the operator does not watch are swept for those deleted behind
its back (reconcile.vanished), and their owners run in full, which applies them again. Children
missing because their namespace is being deleted are not applied again: the first owner's run in
each namespace finds out (the API server refuses it), and the others are left to go with their
namespace (reconcile.terminating).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

import kopf

from scaleml_operator.config import OperatorConfig
from scaleml_operator.handlers.loop import HANDLED, RECONCILERS, refresh_soon, run, run_now
from scaleml_operator.handlers.pending import said
from scaleml_operator.reconcile import cache, vanished
from scaleml_operator.reconcile.own_writes import OWN_WRITES
from scaleml_operator.reconcile.terminating import TERMINATING, created
from scaleml_operator.status.acceptance import child_denied

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
            retry_denied(indexes, reconciler.kind.kind, namespace, name)
            try:
                await run(reconciler, name, namespace, memo, indexes)
            except Exception as error:
                log.warning("Resync of %s %s/%s failed: %s", reconciler.kind.kind, namespace, name, said(error))
            await asyncio.sleep(spacing)


def retry_denied(indexes: Mapping[str, Any], kind: str, namespace: str, name: str) -> None:
    """Makes the object's next run a full one if its status says a child was denied for now (ChildDenied).

    A quota raised, objects deleted that used it up, a policy changed: nothing about the object tells
    the operator that the child may now go through, so it is applied again once per period, spread as
    the resync is, until it does and the full run sets SpecApplied back to True.
    """
    parent = cache.one(indexes, cache.PARENTS[kind], (namespace, name))
    if parent is not None and child_denied(OWN_WRITES.newest(parent).get("status") or {}):
        HANDLED.forget(parent["metadata"]["uid"])


async def sweep(memo: kopf.Memo, indexes: Mapping[str, Any], period: float) -> None:
    """Once per period (with jitter), the owners of children deleted by hand run in full (reconcile.vanished)."""
    config: OperatorConfig = memo.get("config", OperatorConfig())
    reconcilers = {reconciler.kind.kind: reconciler for reconciler in RECONCILERS}
    while True:
        await asyncio.sleep(period * random.uniform(0.9, 1.1))
        try:
            gone = await asyncio.to_thread(vanished.sweep, config.cluster_wide)
        except Exception as error:
            log.warning("Could not look for children deleted by hand: %s", said(error))
            continue
        tried: set[str] = set()
        for owner, children in gone.items():
            parent = cache.one(indexes, cache.PARENTS[owner.kind], (owner.namespace, owner.name))
            if parent is None or parent["metadata"]["uid"] != owner.uid or parent["metadata"].get("deletionTimestamp"):
                continue  # its children went with it (the garbage collector's doing), not by hand
            if TERMINATING.goes_with(owner.namespace, created(parent)):
                continue  # its namespace is being deleted: the children went with it, and it goes too
            reconciler = reconcilers[owner.kind]
            # A full run applies every child: the generation it handled is forgotten, so the next is one.
            HANDLED.forget(owner.uid)
            if owner.namespace in tried:
                refresh_soon(reconciler, owner.name, owner.namespace, memo, indexes)
            else:
                # The first owner of each namespace runs at once: should the namespace be being deleted,
                # the API server's refusal says so, and its other owners are left to go with it.
                tried.add(owner.namespace)
                await run_now(reconciler, owner.name, owner.namespace, memo, indexes)
                if TERMINATING.goes_with(owner.namespace, created(parent)):
                    continue
            log.info(
                "%s %s/%s: %s gone, deleted outside the operator; applying again.",
                owner.kind,
                owner.namespace,
                owner.name,
                ", ".join(f"{child.kind} {child.name}" for child in children),
            )
