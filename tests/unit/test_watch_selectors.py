"""The server-side label selectors of the operator's watches: every built-in kind it watches has one, and no
handler loses an object to it. (tests/apiserver/test_watch_selectors.py sees them in the requests.)"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kopf._cogs.structs.references import Resource

import scaleml_operator.handlers  # noqa: F401  (registers the handlers)
from scaleml_api.base import GROUP
from scaleml_operator.builders.meta import MANAGED_BY
from scaleml_operator.handlers.settings import MANAGED_BY_LABEL, WATCH_SELECTORS, configure

Requirements = dict[str, set[str]]


def _requirements(selector: str) -> Requirements:
    """`k=v` and `k in (a,b)` terms (all the selectors use) as key -> the values allowed."""
    found: Requirements = {}
    for term in re.findall(r"[^,()]+(?:\([^)]*\))?", selector):
        if match := re.fullmatch(r"\s*([^=\s]+)\s*=\s*(\S+)\s*", term):
            found[match[1]] = {match[2]}
        elif match := re.fullmatch(r"\s*(\S+)\s+in\s+\(([^)]*)\)\s*", term):
            found[match[1]] = {value.strip() for value in match[2].split(",")}
        else:
            raise AssertionError(f"unexpected term {term!r} in {selector!r}")
    return found


def _resource_handlers() -> list[Any]:
    registry = kopf.get_default_registry()
    return [
        handler
        for handlers in (registry._watching, registry._changing, registry._indexing, registry._spawning)
        for handler in handlers.get_all_handlers()
        if handler.selector is not None
    ]


def _key(handler: Any) -> tuple[str, str, str]:
    return handler.selector.group, handler.selector.version, handler.selector.any_name


def test_every_built_in_kind_the_operator_watches_is_selected_server_side() -> None:
    built_in = {_key(handler) for handler in _resource_handlers() if handler.selector.group != GROUP}
    assert built_in == set(WATCH_SELECTORS)
    for selector in WATCH_SELECTORS.values():
        assert _requirements(selector)[MANAGED_BY_LABEL] == {MANAGED_BY}


@pytest.mark.parametrize("handler", [h for h in _resource_handlers() if h.selector.group != GROUP], ids=lambda h: h.id)
def test_no_handler_wants_an_object_its_selector_leaves_out(handler: Any) -> None:
    """Each handler pins every label its kind's selector names, to a value the selector lets through."""
    labels = handler.labels or {}
    for key, allowed in _requirements(WATCH_SELECTORS[_key(handler)]).items():
        assert isinstance(labels.get(key), str), f"{handler.id} does not filter on {key}"
        assert labels[key] in allowed, f"{handler.id} wants {key}={labels[key]}, which the selector drops"


def test_the_start_up_settings_carry_the_selectors_to_the_built_in_kinds_only() -> None:
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # no peering object to create here
    now = datetime.now(UTC)
    configure(
        settings=settings,
        retry=0,
        started=now,
        runtime=timedelta(0),
        logger=logging.getLogger("test"),
        memo=kopf.Memo(),
    )
    for (group, version, plural), selector in WATCH_SELECTORS.items():
        assert settings.watching.label_selectors.collect(Resource(group, version, plural)) == [selector]
    for plural in ("trainingjobs", "modeldeployments", "driftmonitors"):
        assert settings.watching.label_selectors.collect(Resource(GROUP, "v1alpha1", plural)) == []
    # Same plural, other group: metrics.k8s.io's pods are not core pods.
    assert settings.watching.label_selectors.collect(Resource("metrics.k8s.io", "v1beta1", "pods")) == []
