"""Ends the operator when one of its watches has died: a process that runs deaf must not look alive.

kopf runs each watch (a resource, in a namespace) as a task of its own and, when that task fails, logs
the error and never starts it again: a watch that reconnects into a 403 (RBAC revoked, then the API
server restarted or the watch timed out) leaves a process that answers its liveness probe and serves
nothing. The guard notices a watch task that ended and stops the operator, which then
exits non-zero, so that its Deployment restarts it (with back-off, until the rights are back) and
`kubectl get pods` shows why.

The peering tasks are guarded alike: a replica whose keep-alive died is taken over by another
while it goes on, and one whose peering watch died no longer yields to the others, two operators
acting at once. A task that was cancelled (kopf stopping it: shutdown, a resource that went away)
is not a fault. The names kopf gives these tasks are all the guard relies on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Final

log = logging.getLogger(__name__)

# "watcher for <resource>@<namespace>", and the peering's "... for <peering>@<namespace>".
GUARDED_PREFIXES: Final = ("watcher for ", "peering keep-alive for ", "peering observer for ")
CHECK_SECONDS: Final = 1.0


def watch_tasks(tasks: Iterable[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    return {task for task in tasks if task.get_name().startswith(GUARDED_PREFIXES)}


def ended(tasks: Iterable[asyncio.Task[object]]) -> list[str]:
    """The names of the tasks among `tasks` that ended (failed, or returned: kopf's are meant to run
    until cancelled) without being cancelled, sorted."""
    return sorted(task.get_name() for task in tasks if task.done() and not task.cancelled())


async def guard(stop: asyncio.Event, check_seconds: float = CHECK_SECONDS) -> list[str]:
    """Looks at kopf's watch and peering tasks until one ends, then sets `stop` and returns their names.

    A finished task leaves `asyncio.all_tasks()`, so the guard keeps every watch task it has seen.
    """
    seen: set[asyncio.Task[object]] = set()
    while not stop.is_set():
        seen |= watch_tasks(asyncio.all_tasks())
        if lost := ended(seen):
            log.error("The %s ended (see above) and kopf does not start it again: stopping", ", ".join(lost))
            stop.set()
            return lost
        # Cancelled ones are gone for good: forget them.
        seen = {task for task in seen if not task.done()}
        await asyncio.sleep(check_seconds)
    return []
