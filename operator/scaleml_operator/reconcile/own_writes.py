"""The status this process last wrote to each object, until the watch's cache shows it: a run must not read its past.

A status write returns the object's new resourceVersion at once; the watch brings the object back
later, and under load seconds later. A run in between (a child's refresh) that composed its write
from the cache's copy would be refused as a conflict, and pay a read and a second write to heal.
So each write is remembered with the resourceVersions it replaced: while the cache still holds one
of those, the run reads the object with the status written since; once the cache shows anything
else (this write, or a newer one by anyone), the cache is the fresher and the entry goes. An
owner's entry also goes when it is deleted, so what is held is bounded by the objects that exist.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final


@dataclass
class _Write:
    resource_version: str
    status: Mapping[str, Any]
    # The resourceVersions the writes since the cache last caught up replaced.
    replaced: set[str] = field(default_factory=set)


class OwnWrites:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, _Write] = {}

    def wrote(self, uid: str, replaced: str, resource_version: str, status: Mapping[str, Any]) -> None:
        with self._lock:
            earlier = self._by_uid.get(uid)
            superseded = {*(earlier.replaced if earlier else ()), replaced}
            self._by_uid[uid] = _Write(resource_version, status, superseded)

    def newest(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The object as the cache gave it, or with the status this process wrote since."""
        meta = body["metadata"]
        with self._lock:
            write = self._by_uid.get(meta["uid"])
            if write is None:
                return body
            if meta.get("resourceVersion") not in write.replaced:
                del self._by_uid[meta["uid"]]
                return body
        return {**body, "metadata": {**meta, "resourceVersion": write.resource_version}, "status": write.status}

    def forget(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uid)


OWN_WRITES: Final = OwnWrites()
