"""Turning a spec from the API into a typed model, with errors that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def parse_spec(kind: Kind[SpecT, Any], spec: Mapping[str, Any]) -> SpecT:
    """The typed spec of an object of `kind`; InvalidSpecError says what is wrong and where."""
    try:
        return kind.spec.model_validate(dict(spec))
    except ValidationError as error:
        raise InvalidSpecError(describe(error)) from error


def parse_spec_or_none(kind: Kind[SpecT, Any], spec: Mapping[str, Any]) -> SpecT | None:
    """The typed spec, or None when it is invalid (the reconcile that accepts specs reports why)."""
    try:
        return parse_spec(kind, spec)
    except InvalidSpecError:
        return None
