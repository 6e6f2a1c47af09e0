"""Namespaces the API server said are being deleted: their objects are left to go with them.

Deleting a namespace deletes the operator's objects and their children in no set order. Each
child's deletion brings its owner a run (a refresh, or a full one when the periodic sweep finds
children gone) that applies them anew, and the API server refuses every such write: deleting a
namespace of 1,000 TrainingJobs cost 852 refused requests, one full run each. Once a write in a
namespace was refused because it terminates, the runs of the objects created before that are
skipped without a request; an object created after it belongs to a namespace of the same name
made anew, and runs as any other.

Comparing the object's creationTimestamp (the API server's clock) with this process's clock is
safe in one direction only: an object that was there before looks newer when this clock is
behind, and costs the refused write it costs today. When this clock is ahead, a new object may
look older and be skipped: a skipped run leaves its object not handled (handlers.loop), and a
record is dropped `HOLD_SECONDS` after the last refusal, so the first run of it after that (at the
latest the periodic resync's) runs it in full.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

HOLD_SECONDS: Final = 30.0


class Terminating:
    """The namespaces seen terminating, with when the last write in each was refused (this process's clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._refused: dict[str, float] = {}

    def refused(self, namespace: str) -> None:
        """A write in `namespace` was refused because the namespace is being deleted."""
        with self._lock:
            self._refused[namespace] = self._clock()

    def goes_with(self, namespace: str, created: datetime | None) -> bool:
        """Whether an object of `namespace` created at `created` goes with the namespace, and needs no run."""
        with self._lock:
            now = self._clock()
            for name in [name for name, at in self._refused.items() if now - at > HOLD_SECONDS]:
                del self._refused[name]
            refused = self._refused.get(namespace)
        return refused is not None and created is not None and created.timestamp() <= refused


def created(body: Mapping[str, Any]) -> datetime | None:
    """When the object was created, by the API server's clock (None for an object not stored yet)."""
    stamp = body["metadata"].get("creationTimestamp")
    return datetime.fromisoformat(stamp) if isinstance(stamp, str) else None


TERMINATING: Final = Terminating(time.time)
