"""Names are names: every pattern anchored, every name field refusing paths, dots, upper case and traversal."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from scaleml_api.crdgen import openapi_schema
from scaleml_api.v1alpha1 import KINDS
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_operator.kube import apply as kube
from tests.support.name_fields import HOSTILE_NAMES, NameField, name_fields

FIELDS = name_fields()


def _patterns(schema: dict[str, Any], path: str) -> Iterator[tuple[str, str]]:
    if "pattern" in schema:
        yield path, schema["pattern"]
    for child in ("items", "additionalProperties"):
        if isinstance(schema.get(child), dict):
            yield from _patterns(schema[child], f"{path}[]")
    for name, prop in schema.get("properties", {}).items():
        yield from _patterns(prop, f"{path}.{name}")


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regular expression (| outside groups and classes)."""
    parts, depth, in_class, escaped, start = [], 0, False, False, 0
    for index, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
    return [*parts, pattern[start:]]


PATTERNS = [
    (f"{kind.kind}.{path}", pattern)
    for kind in KINDS
    for part in (kind.spec, kind.status)
    for path, pattern in _patterns(openapi_schema(part), "")
]


@pytest.mark.parametrize(("path", "pattern"), PATTERNS, ids=[path for path, _ in PATTERNS])
def test_every_alternative_of_every_pattern_is_anchored_at_both_ends(path: str, pattern: str) -> None:
    # Patterns match anywhere in the value (Go's MatchString, pydantic's search): an unanchored
    # alternative lets anything through that merely contains a match.
    for alternative in _alternatives(pattern):
        assert alternative.startswith("^"), f"{path}: {alternative!r} in {pattern!r}"
        assert alternative.endswith("$"), f"{path}: {alternative!r} in {pattern!r}"


def test_the_name_fields_are_found_in_every_kind() -> None:
    found = {(field.kind, field.path) for field in FIELDS}
    assert {
        ("TrainingJob", "spec.data.volumeClaim"),
        ("TrainingJob", "spec.scheduling.priorityClassName"),
        ("ModelDeployment", "spec.model.fromTrainingJob"),
        ("DriftMonitor", "spec.target.modelDeployment"),
        ("DriftMonitor", "spec.reference.fromTrainingJob"),
    } <= found


def _pattern_at(field: NameField) -> str:
    kind = next(kind for kind in KINDS if kind.kind == field.kind)
    patterns = dict(_patterns(openapi_schema(kind.spec), "spec"))
    return patterns[field.path.replace("[0]", "[]")]


@pytest.mark.parametrize("value", HOSTILE_NAMES)
@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f"{f.kind}-{f.path}")
def test_a_name_field_refuses_what_is_not_a_name_naming_the_field(field: NameField, value: str) -> None:
    # The API server's side: the CRD's pattern, with Go's match-anywhere semantics. Go's $ is
    # Python's \Z: Python's $ also matches before a final line break.
    assert re.search(re.sub(r"(?<!\\)\$", r"\\Z", _pattern_at(field)), value) is None
    # The operator's side: the same models, with a message that names the field.
    kind = next(kind for kind in KINDS if kind.kind == field.kind)
    with pytest.raises(InvalidSpecError, match=re.escape(field.path)):
        parse_spec(kind, field.manifest(value)["spec"])


@pytest.mark.parametrize("value", HOSTILE_NAMES)
def test_the_kube_layer_makes_no_request_for_what_is_not_a_name(value: str) -> None:
    # The second line of defence: no client is even built, let alone a request sent.
    with pytest.raises(kube.InvalidNameError):
        kube.get("scaleml.dev/v1alpha1", "TrainingJob", value, "team-a")
    with pytest.raises(kube.InvalidNameError):
        kube.delete("scaleml.dev/v1alpha1", "TrainingJob", "fine", value)
