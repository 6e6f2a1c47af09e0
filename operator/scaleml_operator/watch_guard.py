"""Ends the operator when one of its watches has died: a process that runs deaf must not look alive.

kopf runs each watch (a resource, in a namespace) and each peering task as a task of its own. A
watch that reconnects into a 403 (RBAC revoked, then the API server restarted or the watch timed
out) is retried for kopf's error back-offs, then its task fails, and kopf begins a graceful
shutdown, which waits for every other task to end. That wait was seen to last for minutes (once
in five runs of the fault test), while the process answered its liveness probe and served
nothing. The guard notices a watch or peering task that ended without being cancelled, asks kopf
to stop, and, if the process is still there `DEADLINE_SECONDS` later, ends it with exit code 1,
so that its Deployment restarts it (with back-off, until the rights are back) and `kubectl get
pods` shows why.

A task that was cancelled (kopf stopping it: shutdown, a resource that went away) is not a fault.
The names kopf gives these tasks are all the guard relies on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Final

log = logging.getLogger(__name__)

# "watcher for <resource>@<namespace>", and the peering's "... for <peering>@<namespace>".
GUARDED_PREFIXES: Final = ("watcher for ", "peering keep-alive for ", "peering observer for ")
CHECK_SECONDS: Final = 1.0
# From a watch's end to the process's, at most (kopf's own shutdown takes a second when it goes well).
DEADLINE_SECONDS: Final = 15.0


def watch_tasks(tasks: Iterable[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    return {task for task in tasks if task.get_name().startswith(GUARDED_PREFIXES)}


def ended(tasks: Iterable[asyncio.Task[object]]) -> list[str]:
    """The names of the tasks among `tasks` that ended (failed, or returned: kopf's are meant to run
    until cancelled) without being cancelled, sorted."""
    return sorted(task.get_name() for task in tasks if task.done() and not task.cancelled())


def exit_now(lost: list[str]) -> None:
    log.error("Still running after the %s ended: exiting", ", ".join(lost))
    logging.shutdown()
    os._exit(1)


async def guard(
    stop: asyncio.Event,
    check_seconds: float = CHECK_SECONDS,
    deadline_seconds: float = DEADLINE_SECONDS,
    at_deadline: Callable[[list[str]], None] = exit_now,
) -> list[str]:
    """Looks at kopf's watch and peering tasks until one ends, then sets `stop`, starts the deadline
    (`at_deadline` runs then, unless the process has ended) and returns the ended tasks' names.

    A finished task leaves `asyncio.all_tasks()`, so the guard keeps every watch task it has seen.
    """
    seen: set[asyncio.Task[object]] = set()
    while not stop.is_set():
        seen |= watch_tasks(asyncio.all_tasks())
        if lost := ended(seen):
            log.error("The %s ended (see above) and kopf does not start it again: stopping", ", ".join(lost))
            stop.set()
            # A thread of its own, which does not hold the process up: the deadline holds however the
            # event loop's shutdown goes, and a shutdown that goes well is not kept waiting.
            deadline = threading.Timer(deadline_seconds, at_deadline, args=(lost,))
            deadline.daemon = True
            deadline.start()
            return lost
        # Cancelled ones are gone for good: forget them.
        seen = {task for task in seen if not task.done()}
        await asyncio.sleep(check_seconds)
    return []
