"""Turning a spec from the API into a typed model, with errors that name the field.

The parse is the API server's: the values it would store (`admitted`), checked in pydantic's
strict mode, which takes JSON's types as the CRD's schema does (no "2" for an integer, no "true"
for a boolean). So a spec that `scaleml local` accepts is one the API server accepts, and the
other way round; the operator, which reads what the API server stored, sees the same.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from scaleml_api.base import Location, NestedFieldError
from scaleml_api.kind import Kind, SpecT


class InvalidSpecError(ValueError):
    """The spec passed the CRD schema but not the operator's own validation."""


def _location(loc: Location) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def describe(error: ValidationError) -> str:
    """One line per problem: "spec.model.params.hiddenSizes: Input should be a valid list"."""
    lines = []
    for problem in error.errors(include_url=False):
        cause = problem.get("ctx", {}).get("error")
        if isinstance(cause, NestedFieldError):
            for location, message in cause.problems:
                lines.append(f"{_location((*problem['loc'], *location))}: {message.removeprefix('Value error, ')}")
        else:
            lines.append(f"{_location(problem['loc'])}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


# The range of the integers the API server decodes from JSON (int64); a whole number beyond it is a float.
_INT64: Final = range(-(2**63), 2**63)
# Go's JSON encoder writes a float from 1e21 on with an exponent, which the API server reads as a float.
_PLAIN_FLOAT_LIMIT: Final = 1e21


def defaulted(schema: Mapping[str, Any], value: Any) -> Any:
    """`value` as the API server stores it under the structural `schema`: each absent property that
    has a default gets it (and that default its own properties' defaults), in every object there is,
    list items and map values included."""
    if isinstance(value, Mapping):
        properties = schema.get("properties", {})
        filled = {key: copy.deepcopy(child["default"]) for key, child in properties.items() if "default" in child}
        filled.update(value)
        extra = schema.get("additionalProperties")
        return {
            key: defaulted(properties.get(key) or (extra if isinstance(extra, Mapping) else {}), item)
            for key, item in filled.items()
        }
    if isinstance(value, list):
        return [defaulted(schema.get("items", {}), item) for item in value]
    return value


def admitted(value: Any) -> Any:
    """A JSON value as the API server takes it from a request, before its schema checks.

    Objects lose their null fields, at any depth: the CRDs mark nothing nullable, so the API server
    drops them (and then fills in the field's default), free-form maps included; a null in a list
    stays, and is refused by the type of the list's items. Numbers are as the API server decodes
    them: a whole number within int64 is an integer, however it was written (2.0 and 1e3 are
    integers there), and any other number a float.
    """
    if isinstance(value, Mapping):
        return {key: admitted(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [admitted(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < _PLAIN_FLOAT_LIMIT:
        value = int(value)
    if isinstance(value, int):
        return value if value in _INT64 else float(value)
    return value


def parse_spec(kind: Kind[SpecT, Any], spec: Mapping[str, Any]) -> SpecT:
    """The typed spec of an object of `kind`; InvalidSpecError says what is wrong and where."""
    try:
        # JSON, as the API server reads it; refuses NaN and infinities, which JSON cannot hold.
        document = json.dumps(admitted(spec), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidSpecError(f"spec: {error}") from error
    try:
        return kind.spec.model_validate_json(document, strict=True)
    except ValidationError as error:
        raise InvalidSpecError(describe(error)) from error


def parse_spec_or_none(kind: Kind[SpecT, Any], spec: Mapping[str, Any]) -> SpecT | None:
    """The typed spec, or None when it is invalid (the reconcile that accepts specs reports why)."""
    try:
        return parse_spec(kind, spec)
    except InvalidSpecError:
        return None
