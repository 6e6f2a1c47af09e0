from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from scaleml_operator.handlers.metrics import OBJECTS, instrumented, last_outside_change


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_last_outside_change_ignores_the_operators_own_writes() -> None:
    meta = {
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [
            {"manager": "kubectl-client-side-apply", "time": "2026-01-01T00:05:00Z"},
            {"manager": "scaleml-operator", "time": "2026-01-01T00:09:00Z"},
            {"manager": "kubectl", "time": "2026-01-01T00:10:00Z", "subresource": "status"},
        ],
    }
    changed = last_outside_change(meta, frozenset({"scaleml-operator"}))
    assert changed is not None
    assert changed.isoformat() == "2026-01-01T00:05:00+00:00"


def test_instrumented_counts_errors_retries_and_durations() -> None:
    @instrumented("Widget", frozenset())
    async def handle(**_: Any) -> None:
        raise ConnectionError("the API server is away")

    before_errors = _value(
        "scaleml_operator_handler_errors_total", kind="Widget", handler="handle", error="ConnectionError"
    )
    before_retries = _value("scaleml_operator_handler_retries_total", kind="Widget", handler="handle")
    before_count = _value("scaleml_operator_handler_duration_seconds_count", kind="Widget", handler="handle")
    before_lags = _value("scaleml_operator_reaction_lag_seconds_count", kind="Widget")
    for retry in (0, 1):
        with pytest.raises(ConnectionError):
            asyncio.run(handle(retry=retry, reason="create", meta={"creationTimestamp": "2026-01-01T00:00:00Z"}))
    assert (
        _value("scaleml_operator_handler_errors_total", kind="Widget", handler="handle", error="ConnectionError")
        == before_errors + 2
    )
    assert _value("scaleml_operator_handler_retries_total", kind="Widget", handler="handle") == before_retries + 1
    assert (
        _value("scaleml_operator_handler_duration_seconds_count", kind="Widget", handler="handle") == before_count + 2
    )
    assert _value("scaleml_operator_reaction_lag_seconds_count", kind="Widget") == before_lags + 1


def test_reaction_lag_leaves_out_objects_resumed_after_a_restart_and_events_of_children() -> None:
    @instrumented("Resumed", frozenset())
    async def handle(**_: Any) -> None:
        return None

    asyncio.run(handle(retry=0, reason="resume", meta={"creationTimestamp": "2020-01-01T00:00:00Z"}))
    asyncio.run(handle(retry=0, reason="update", meta={"creationTimestamp": "2020-01-01T00:00:00Z"}))
    # A child's event handler (no reason): the object itself did not change.
    asyncio.run(handle(retry=0, meta={"creationTimestamp": "2020-01-01T00:00:00Z"}))
    assert _value("scaleml_operator_reaction_lag_seconds_count", kind="Resumed") == 1


def test_object_inventory_counts_by_kind_and_phase() -> None:
    OBJECTS.seen("Gadget", "ns", "a", "Running")
    OBJECTS.seen("Gadget", "ns", "b", "Running")
    OBJECTS.seen("Gadget", "ns", "c", "Failed")
    OBJECTS.seen("Gadget", "ns", "c", "Running")
    OBJECTS.gone("Gadget", "ns", "b")
    assert _value("scaleml_operator_objects", kind="Gadget", phase="Running") == 2
    assert _value("scaleml_operator_objects", kind="Gadget", phase="Failed") == 0
