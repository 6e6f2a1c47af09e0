"""The children this process applied, by owner, with their uids: so that applying one again is one request.

A child known here is applied with its uid as a precondition, which the API server checks: the
same request proves it is still the object the operator made and updates it. A child not known
(after a restart, or one an earlier operator made) is read first, to tell ours from another
team's object of the same name. An owner's entries go when the owner is deleted, so what is held
is bounded by the objects that exist. The periodic sweep (reconcile.vanished) also reads them: a
child known here that the API server no longer has was deleted behind the operator's back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Final

from scaleml_operator.builders.meta import Owner


@dataclass(frozen=True)
class Child:
    """A child as applied: its owner, kind, name and uid."""

    owner: Owner
    kind: str
    name: str
    uid: str


@dataclass
class _Owned:
    owner: Owner
    # (kind, name) of a child -> its uid
    children: dict[tuple[str, str], str] = field(default_factory=dict)


class KnownChildren:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_owner: dict[str, _Owned] = {}

    def uid(self, owner_uid: str, kind: str, name: str) -> str | None:
        with self._lock:
            owned = self._by_owner.get(owner_uid)
            return owned.children.get((kind, name)) if owned else None

    def remember(self, owner: Owner, kind: str, name: str, uid: str) -> None:
        with self._lock:
            self._by_owner.setdefault(owner.uid, _Owned(owner)).children[(kind, name)] = uid

    def forget(self, owner_uid: str, kind: str, name: str, uid: str | None = None) -> None:
        """Forgets the child (only if it is still the one of `uid`, when given: not one applied since)."""
        with self._lock:
            owned = self._by_owner.get(owner_uid)
            if owned and (uid is None or owned.children.get((kind, name)) == uid):
                owned.children.pop((kind, name), None)

    def forget_owner(self, owner_uid: str) -> None:
        with self._lock:
            self._by_owner.pop(owner_uid, None)

    def children(self) -> list[Child]:
        """Every child known, as of now."""
        with self._lock:
            return [
                Child(owned.owner, kind, name, uid)
                for owned in self._by_owner.values()
                for (kind, name), uid in owned.children.items()
            ]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(owned.children) for owned in self._by_owner.values())


KNOWN: Final = KnownChildren()
