"""Keeps the objects-by-phase metric current from the watch stream."""

from __future__ import annotations

from typing import Any

import kopf

from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import KINDS
from scaleml_operator.handlers.metrics import OBJECTS


def _register(kind: AnyKind) -> None:
    @kopf.on.event(*kind.group_version, id="inventory")
    async def track(type: str, name: str, namespace: str | None, status: kopf.Status, **_: Any) -> None:
        # kopf passes type None for the objects of the initial listing.
        if type == "DELETED":
            OBJECTS.gone(kind.kind, namespace or "", name)
        else:
            OBJECTS.seen(kind.kind, namespace or "", name, status.get("phase") or "Unknown")


for _kind in KINDS:
    _register(_kind)
