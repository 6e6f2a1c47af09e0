"""Giving memory back to the system once objects are gone.

What the operator holds per object (kopf's per-object state, the watches' caches, the children it
knows) is dropped when the object is deleted, but the process does not shrink by itself: glibc
keeps what the reconciles' threads freed in their arenas for reuse, and CPython's own allocator
returns one of its 1 MiB arenas only when every block in it is free, which after a wave of objects
is almost never: a few blocks that outlive the wave pin nearly every arena. After a wave of
deletions, once they have stopped, `release()` collects garbage and asks glibc to return its free
pages (malloc_trim). That reaches the Python objects only where they come from glibc
(PYTHONMALLOC=malloc), which costs CPU. Measured with 1,000 TrainingJobs (bench/operator.py):

    allocator          CPU s per object   peak RSS   after deleting them (idle 72 MiB)
    CPython's (pods)   0.096              248 MiB    238 MiB
    glibc's            0.118              298 MiB    126 MiB (3 waves of 500: 116-120 each)

The pod keeps CPython's: the CPU is what bounds how fast a thousand objects converge, and the
peak, which its memory limit must hold anyway, is lower. docs/install.md says how to switch.

What no allocator setting gives back, a fresh process does: when a wave has left the process far
above its start-up size and most of the objects it served are gone, it replaces itself (execve:
the same pid, arguments and environment; the caller stops kopf first). The new process lists what
is left, runs each remaining object in full once (their children are applied again, unchanged),
and is back at its start-up size: 1,000 TrainingJobs deleted, 207 MiB after release() -> 72 MiB
(idle 71). It is what uWSGI's reload-on-rss and Celery's max-memory-per-child do for the same
reason. The process serves nothing while it restarts (0.5 s in that run), as after any restart;
nothing is lost, as the operator keeps no state but what the cluster holds. mimalloc (preloaded,
PYTHONMALLOC=malloc) was measured too and kept more: 88 MiB idle, 268 at 1,000 TrainingJobs, 210
after deleting them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_TRIM: Final = _malloc_trim()


def resident_mib() -> float | None:
    """The process's resident set size (Linux), or None where /proc has none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def release() -> float | None:
    """Frees what is unreachable and returns free heap pages to the system (blocking: call from a thread).

    Returns the resident size afterwards (MiB), or None where /proc has none.
    """
    before = resident_mib()
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
    after = resident_mib()
    if before is not None and after is not None:
        log.info("Objects were deleted: memory given back, resident %.0f -> %.0f MiB", before, after)
        log.debug("%d blocks allocated by Python, %d objects tracked", sys.getallocatedblocks(), len(gc.get_objects()))
    return after


# A fresh process only when nearly all of the objects are gone: it runs each remaining one in full,
# which costs their children's applies, so the restart's work is at most a tenth of the wave's.
LEFT_AT_MOST: Final = 0.1


@dataclass(frozen=True)
class Footprint:
    """The process's resident size (MiB) now and at start-up, and its objects now and at most so far."""

    resident_mib: float
    start_mib: float
    objects: int
    peak_objects: int


def worth_replacing(footprint: Footprint, above_mib: float) -> bool:
    """Whether a fresh process would give back more than `above_mib` for little work (0: never).

    Asked once a wave of deletions has ended and release() did what it could.
    """
    if above_mib <= 0:
        return False
    grown = footprint.resident_mib - footprint.start_mib
    return grown > above_mib and footprint.objects <= footprint.peak_objects * LEFT_AT_MOST


class Replacement:
    """Asked for by the background task, done by `scaleml operator` once kopf has stopped."""

    def __init__(self) -> None:
        self._asked = threading.Event()

    def ask(self, deadline_seconds: float) -> None:
        """Asks for it; if kopf has not stopped `deadline_seconds` later (its graceful shutdown was seen
        to hang for minutes, see watch_guard), the process is replaced from this timer's thread."""
        self._asked.set()
        deadline = threading.Timer(deadline_seconds, self.replace)
        deadline.daemon = True
        deadline.start()

    @property
    def asked(self) -> bool:
        return self._asked.is_set()

    def replace(self) -> None:
        """Runs the process's command line again in its place; returns only if the exec failed (it raises)."""
        logging.shutdown()  # flushes every handler: the new process appends to the same stream
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, sys.orig_argv)


REPLACEMENT: Final = Replacement()


class Wave:
    """Tells, from how many objects the watches' caches hold at each look, when a wave of deletions has ended.

    Counted in the caches, children included: a namespace's deletion takes the ScaleML objects first
    and their Jobs, pods and Deployments after, and what a wave leaves behind is in both.
    """

    def __init__(self) -> None:
        self._previous = 0
        self._high = 0
        self.peak = 0

    def ended(self, held: int) -> bool:
        """True once the count stopped falling: below its high since the last True, unchanged since the last look."""
        self.peak = max(self.peak, held)
        self._high = max(self._high, held)
        ended = held == self._previous and held < self._high
        self._previous = held
        if ended:
            self._high = held
        return ended
