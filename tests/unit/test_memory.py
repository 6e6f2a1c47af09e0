"""Memory goes back to the system once a wave of deletions has ended."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from scaleml_operator.memory import Footprint, Wave, worth_replacing

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


def test_a_wave_of_deletions_has_ended_once_the_count_stops_falling() -> None:
    wave = Wave()
    assert not wave.ended(0)  # nothing yet
    assert not wave.ended(500)  # objects arrive
    assert not wave.ended(1000)
    assert not wave.ended(1000)  # at rest, nothing was deleted
    assert not wave.ended(400)  # deleting
    assert not wave.ended(30)  # still deleting
    assert wave.ended(30)  # no change since the last look
    assert not wave.ended(30)  # and that one has been told
    assert not wave.ended(40)  # a few more
    assert not wave.ended(40)
    assert not wave.ended(0)
    assert wave.ended(0)
    assert wave.peak == 1000


@pytest.mark.parametrize(
    ("footprint", "worth"),
    [
        pytest.param(Footprint(214, 71, 0, 1000), True, id="every-object-deleted"),
        pytest.param(Footprint(214, 71, 100, 1000), True, id="a-tenth-left"),
        # A fresh process would run each of them in full again, and grow back with them.
        pytest.param(Footprint(214, 71, 101, 1000), False, id="more-than-a-tenth-left"),
        pytest.param(Footprint(100, 71, 0, 50), False, id="grown-by-less-than-the-threshold"),
    ],
)
def test_a_fresh_process_only_when_it_gives_back_much_for_little_work(footprint: Footprint, worth: bool) -> None:
    assert worth_replacing(footprint, above_mib=32) is worth


def test_a_threshold_of_zero_never_replaces() -> None:
    assert not worth_replacing(Footprint(1000, 71, 0, 1000), above_mib=0)
