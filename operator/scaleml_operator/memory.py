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


def release() -> None:
    """Frees what is unreachable and returns free heap pages to the system (blocking: call from a thread)."""
    before = resident_mib()
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)
    after = resident_mib()
    if before is not None and after is not None:
        log.info("Objects were deleted: memory given back, resident %.0f -> %.0f MiB", before, after)
        log.debug("%d blocks allocated by Python, %d objects tracked", sys.getallocatedblocks(), len(gc.get_objects()))


class Deletions:
    """Counts deletions, so that memory is released once a wave of them has ended, not during it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._released_at = 0
        self._last_seen = 0

    def deleted(self) -> None:
        with self._lock:
            self._count += 1

    def settled(self) -> bool:
        """True, once, when there were deletions since the last release and none since the last call."""
        with self._lock:
            count, last_seen = self._count, self._last_seen
            self._last_seen = count
            if count == last_seen and count != self._released_at:
                self._released_at = count
                return True
            return False


DELETIONS: Final = Deletions()
