"""Memory goes back to the system once a wave of deletions has ended."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from scaleml_operator.memory import Deletions

# Another process, so that its RSS is its own: a worker thread fills a glibc arena with 1 KiB
# objects and frees all but one in a hundred, which pins the heap's top as a reconcile's leftovers do.
_FRAGMENTED = textwrap.dedent(
    """
    import threading
    from pathlib import Path

    from scaleml_operator.memory import release

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 // 2**20

    kept = []

    def fill() -> None:
        objects = [bytes(1024) + bytes([i % 256]) for i in range(300_000)]
        kept.extend(objects[::100])

    thread = threading.Thread(target=fill)
    thread.start()
    thread.join()
    before = rss()
    release()
    print(before, rss())
    """
)


def test_release_returns_the_pages_that_freed_objects_left() -> None:
    result = subprocess.run([sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, check=True)
    before, after = map(int, result.stdout.split())
    assert before - after > 200, (before, after)  # of the ~300 MiB freed


# Python objects of a reconcile's size (CPython's small-object range), one in a thousand outliving the rest.
_SMALL_OBJECTS = textwrap.dedent(
    """
    from pathlib import Path

    from scaleml_operator.memory import release

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 // 2**20

    objects = [bytes(100) + i.to_bytes(4, "little") for i in range(2_000_000)]
    kept = objects[::1000]
    del objects
    before = rss()
    release()
    print(before, rss())
    """
)


def test_with_glibcs_allocator_release_returns_what_small_objects_left() -> None:
    """The switch docs/install.md offers. (With CPython's allocator the survivors keep every arena: 298 -> 298 MiB.)"""
    environment = {**os.environ, "PYTHONMALLOC": "malloc", "MALLOC_ARENA_MAX": "2"}
    result = subprocess.run(
        [sys.executable, "-c", _SMALL_OBJECTS], capture_output=True, text=True, check=True, env=environment
    )
    before, after = map(int, result.stdout.split())
    assert before - after > 150, (before, after)  # of the ~250 MiB freed


def test_release_is_due_once_after_deletions_stop() -> None:
    deletions = Deletions()
    assert not deletions.settled()  # nothing deleted
    deletions.deleted()
    assert not deletions.settled()  # deleting now
    deletions.deleted()
    assert not deletions.settled()  # still deleting
    assert deletions.settled()  # none since the last look
    assert not deletions.settled()  # released already
    deletions.deleted()
    assert not deletions.settled()
    assert deletions.settled()
