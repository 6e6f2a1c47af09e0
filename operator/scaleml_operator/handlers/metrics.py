"""Prometheus metrics of the operator itself; kopf exports none.

Served by `scaleml operator --metrics-port` (see cli.py) from the default registry.
"""

from __future__ import annotations

import functools
import time
from collections import Counter as Tally
from collections.abc import Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from scaleml_operator.kube.apply import FIELD_MANAGER

HANDLER_DURATION = Histogram(
    "scaleml_operator_handler_duration_seconds",
    "Time spent in one handler invocation.",
    ["kind", "handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HANDLER_ERRORS = Counter(
    "scaleml_operator_handler_errors_total",
    "Handler invocations that raised, by exception class (a failed run runs again after a backoff).",
    ["kind", "handler", "error"],
)
HANDLER_RETRIES = Counter(
    "scaleml_operator_handler_retries_total",
    "Handler invocations that were retries of an earlier failed one.",
    ["kind", "handler"],
)
REACTION_LAG = Histogram(
    "scaleml_operator_reaction_lag_seconds",
    "Time from the last change of an object by anyone else to the start of its handler (first attempts "
    "on create and update): watch delay and queueing together.",
    ["kind"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def last_outside_change(meta: Mapping[str, Any], own_managers: frozenset[str]) -> datetime | None:
    """When the object was last changed by someone other than the operator, at second precision."""
    times = [
        _parse_time(entry["time"])
        for entry in meta.get("managedFields") or ()
        if entry.get("time") and entry.get("manager") not in own_managers and entry.get("subresource") != "status"
    ]
    if meta.get("creationTimestamp"):
        times.append(_parse_time(meta["creationTimestamp"]))
    return max(times, default=None)


Handler = Callable[..., Coroutine[Any, Any, Any]]
# Changes the operator makes itself do not count as reactions to wait for.
OWN_MANAGERS: Final = frozenset({FIELD_MANAGER, "kopf"})


def instrumented(kind: str, own_managers: frozenset[str] = OWN_MANAGERS) -> Callable[[Handler], Handler]:
    """Wraps an async kopf handler with duration, error, retry and lag metrics."""

    def decorate(handler: Handler) -> Handler:
        name = handler.__name__

        @functools.wraps(handler)
        async def wrapper(**kwargs: Any) -> Any:
            if kwargs.get("retry", 0):
                HANDLER_RETRIES.labels(kind, name).inc()
            # Only a create or a spec change is a reaction: after an operator restart (a resume) the last
            # change may be days old, and a child's event is no change of the object at all.
            elif kwargs.get("reason") in ("create", "update"):
                changed = last_outside_change(kwargs.get("meta", {}), own_managers)
                if changed is not None:
                    REACTION_LAG.labels(kind).observe(max(0.0, (datetime.now(UTC) - changed).total_seconds()))
            started = time.perf_counter()
            try:
                return await handler(**kwargs)
            except Exception as error:
                HANDLER_ERRORS.labels(kind, name, type(error).__name__).inc()
                raise
            finally:
                HANDLER_DURATION.labels(kind, name).observe(time.perf_counter() - started)

        return wrapper

    return decorate


class ObjectInventory(Collector):
    """Objects the operator currently sees, by kind and phase, collected at scrape time."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str, str], str] = {}

    def seen(self, kind: str, namespace: str, name: str, phase: str) -> None:
        self._phases[(kind, namespace, name)] = phase

    def gone(self, kind: str, namespace: str, name: str) -> None:
        self._phases.pop((kind, namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "scaleml_operator_objects",
            "ScaleML objects watched by this operator, by kind and phase.",
            labels=["kind", "phase"],
        )
        counts = Tally((kind, phase) for (kind, _, _), phase in self._phases.items())
        for (kind, phase), count in sorted(counts.items()):
            family.add_metric([kind, phase], count)
        yield family


OBJECTS = ObjectInventory()
REGISTRY.register(OBJECTS)
