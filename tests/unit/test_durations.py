"""Durations are bounded so that CEL's duration() (a Go time.Duration) never overflows on them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from scaleml_api.base import DURATION_PATTERN, canonical_duration, duration_seconds
from scaleml_api.crdgen import openapi_schema
from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import KINDS
from scaleml_api.validation import InvalidSpecError, parse_spec
from tests.support.manifests import example, merged

# The longest span a Go time.Duration holds: 2^63 - 1 nanoseconds, 2562047h47m16.854775807s.
GO_DURATION_MAX_SECONDS = (2**63 - 1) / 1e9
LONGEST = "999999h999999m999999s"


def _duration_fields(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if schema.get("pattern") == DURATION_PATTERN:
        yield path
    for name, child in schema.get("properties", {}).items():
        yield from _duration_fields(child, (*path, name))


FIELDS = [(kind, path) for kind in KINDS for path in _duration_fields(openapi_schema(kind.spec))]
DURATION_FIELDS = [pytest.param(kind, path, id=f"{kind.kind}.{'.'.join(path)}") for kind, path in FIELDS]


def _spec(kind: AnyKind, path: tuple[str, ...], value: str) -> dict[str, Any]:
    change: dict[str, Any] = {path[-1]: value}
    for name in reversed(path[:-1]):
        change = {name: change}
    spec: dict[str, Any] = merged(example(kind.kind), {"spec": change})["spec"]
    return spec


def test_every_duration_field_is_found() -> None:
    assert {".".join(path) for _, path in FIELDS} == {
        "window.every",
        "retrain.cooldown",
        "capture.retention.maxAge",
    }


def test_the_longest_duration_fits_a_go_duration() -> None:
    assert duration_seconds(LONGEST) < GO_DURATION_MAX_SECONDS
    # What the old pattern let through: three terms of the largest hours.
    assert duration_seconds("999999h999999h999999h") > GO_DURATION_MAX_SECONDS


@pytest.mark.parametrize(("kind", "path"), DURATION_FIELDS)
@pytest.mark.parametrize("value", ["999999h999999h999999h", "2562048h", "5m5m", "30m1h", "", "1d", "5m "])
def test_a_duration_beyond_a_go_duration_or_out_of_form_is_refused_naming_the_field(
    kind: AnyKind, path: tuple[str, ...], value: str
) -> None:
    with pytest.raises(InvalidSpecError) as error:
        parse_spec(kind, _spec(kind, path, value))
    assert f"spec.{'.'.join(path)}: must be a duration of whole hours" in str(error.value)


@pytest.mark.parametrize(("kind", "path"), DURATION_FIELDS)
@pytest.mark.parametrize("value", [LONGEST, "1h30m", "90s", "24h", "1h1s", "0h5m"])
def test_durations_in_form_are_accepted(kind: AnyKind, path: tuple[str, ...], value: str) -> None:
    parse_spec(kind, _spec(kind, path, value))


@pytest.mark.parametrize(
    ("spelling", "shortest"),
    [("300s", "5m"), ("90m", "1h30m"), ("3600s", "1h"), ("0h5m", "5m"), ("0s", "0s"), ("0h", "0s"), ("1h1s", "1h1s")],
)
def test_a_duration_is_written_in_its_shortest_spelling(spelling: str, shortest: str) -> None:
    """What the pods read changes with the span, not with how it is written."""
    assert canonical_duration(spelling) == shortest
    assert duration_seconds(shortest) == duration_seconds(spelling)


def test_a_span_too_long_for_the_pattern_in_hours_keeps_its_spelling() -> None:
    # 1,016,942 hours and change: seven digits of hours would not pass the pattern the pods check.
    assert canonical_duration(LONGEST) == LONGEST
    assert re.fullmatch(DURATION_PATTERN, canonical_duration("999999h59m60s")) is not None
