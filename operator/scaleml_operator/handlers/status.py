"""Writing an object's status against its freshest version, whoever else writes it meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import kopf

from scaleml_operator.api.kinds import Kind
from scaleml_operator.kube import apply as kube
from scaleml_workloads.contract.base import API_VERSION

_ATTEMPTS: Final = 5


@dataclass(frozen=True)
class Written:
    """A status patch that went through: the object as it now is, its status before, and what changed."""

    body: dict[str, Any]
    previous: dict[str, Any]
    changed: dict[str, Any]


def write_status(
    kind: Kind, name: str, namespace: str, compose: Callable[[dict[str, Any]], dict[str, Any]]
) -> Written | None:
    """Patches the status `compose` makes of the freshest object, retrying when another writer came first.

    kopf's own status patch has no precondition and could undo what another handler (or a pod)
    wrote since the object was read. Returns None when nothing changed or the object is going away.
    """
    for _attempt in range(_ATTEMPTS):
        body = kube.get(API_VERSION, kind.kind, name, namespace)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        status = body.get("status") or {}
        update = {key: value for key, value in compose(body).items() if status.get(key) != value}
        if not update:
            return None
        try:
            kube.patch_status(API_VERSION, kind.kind, name, namespace, update, body["metadata"]["resourceVersion"])
        except kube.ConflictError:
            continue
        return Written({**body, "status": {**status, **update}}, status, update)
    raise kopf.TemporaryError(f"{kind.kind} {namespace}/{name} kept changing while its status was updated", delay=1)
