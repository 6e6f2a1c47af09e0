"""Every field of the API that holds an object name, found in the CRD schemas, and values no name may take.

The fields are found by their schema pattern (the name types of scaleml_api.base), so a name field
added to any kind is covered by the tests without being listed anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from scaleml_api.base import NAME_PATTERNS
from scaleml_api.crdgen import openapi_schema
from scaleml_api.v1alpha1 import KINDS
from tests.support.manifests import Manifest, example, merged

# A path out of the namespace, a path separator, a parent step, upper case, a leading dot.
HOSTILE_NAMES = ("x/../../../othertenant/trainingjobs/theirjob", "a/b", "..", "Upper", ".leading", "trailing\n")


@dataclass(frozen=True)
class NameField:
    kind: str
    # Dotted path as the API server prints it in errors, e.g. spec.model.fromTrainingJob.
    path: str
    # The nested change that puts a value there, with VALUE standing for it.
    template: Manifest

    def manifest(self, value: str) -> Manifest:
        return merged(example(self.kind), _substituted(self.template, value))


_VALUE = object()


def _substituted(node: Any, value: str) -> Any:
    if node is _VALUE:
        return value
    if isinstance(node, dict):
        return {key: _substituted(child, value) for key, child in node.items()}
    if isinstance(node, list):
        return [_substituted(child, value) for child in node]
    return node


def _walk(schema: dict[str, Any], path: str, wrap: Any) -> Iterator[tuple[str, Any]]:
    """(path, template) of every name-typed string below `schema`; `wrap` builds the change from a leaf."""
    if schema.get("type") == "string" and schema.get("pattern") in NAME_PATTERNS:
        yield path, wrap(_VALUE)
    if schema.get("type") == "array" and "items" in schema:
        yield from _walk(schema["items"], f"{path}[0]", lambda leaf: wrap([leaf]))
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}", lambda leaf, name=name: wrap({name: leaf}))


def name_fields() -> list[NameField]:
    fields = []
    for kind in KINDS:
        for path, template in _walk(openapi_schema(kind.spec), "spec", lambda leaf: {"spec": leaf}):
            fields.append(NameField(kind.kind, path, template))
    return fields
