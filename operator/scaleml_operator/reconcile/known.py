"""The children this process applied, by owner, with their uids: so that applying one again is one request.

A child known here is applied with its uid as a precondition, which the API server checks: the
same request proves it is still the object the operator made and updates it. A child not known
(after a restart, or one an earlier operator made) is read first, to tell ours from another
team's object of the same name. An owner's entries go when the owner is deleted, so what is held
is bounded by the objects that exist.
"""

from __future__ import annotations

import threading
from typing import Final

# (kind, name) of a child -> its uid
_Children = dict[tuple[str, str], str]


class KnownChildren:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, _Children] = {}

    def uid(self, owner_uid: str, kind: str, name: str) -> str | None:
        with self._lock:
            return self._by_owner.get(owner_uid, {}).get((kind, name))

    def remember(self, owner_uid: str, kind: str, name: str, uid: str) -> None:
        with self._lock:
            self._by_owner.setdefault(owner_uid, {})[(kind, name)] = uid

    def forget(self, owner_uid: str, kind: str, name: str) -> None:
        with self._lock:
            self._by_owner.get(owner_uid, {}).pop((kind, name), None)

    def forget_owner(self, owner_uid: str) -> None:
        with self._lock:
            self._by_owner.pop(owner_uid, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(children) for children in self._by_owner.values())


KNOWN: Final = KnownChildren()
