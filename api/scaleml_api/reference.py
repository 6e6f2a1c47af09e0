"""The field reference in README.md, generated from the same schemas as the CRDs.

`make crds` rewrites the part of README.md between the two markers; a test fails when it is stale.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaleml_api.crdgen import openapi_schema
from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import KINDS

BEGIN = "<!-- BEGIN GENERATED FIELD REFERENCE (make crds) -->"
END = "<!-- END GENERATED FIELD REFERENCE -->"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "int or string"
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    kind = node.get("type", "")
    if kind == "array":
        return f"list of {_type(node['items'])}"
    if kind == "object" and "properties" not in node:
        values = node.get("additionalProperties")
        return f"map of {_type(values)}" if isinstance(values, dict) else "object (free-form)"
    return str(kind)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _notes(node: dict[str, Any], required: bool) -> str:
    bounds = []
    if "minimum" in node:
        bounds.append((">" if node.get("exclusiveMinimum") else "≥") + f" {_number(node['minimum'])}")
    if "maximum" in node:
        bounds.append(("<" if node.get("exclusiveMaximum") else "≤") + f" {_number(node['maximum'])}")
    if "maxItems" in node:
        bounds.append(f"at most {node['maxItems']} items")
    notes = ["**Required.**"] if required else []
    if bounds:
        notes.append(f"({', '.join(bounds)})")
    notes += [f"Rule: {rule['message']}." for rule in node.get("x-kubernetes-validations", [])]
    return " ".join(notes)


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _rows(node: dict[str, Any], path: str, required: bool) -> Iterator[str]:
    if path != "spec":
        default = node.get("default")
        shown = "" if default is None or isinstance(default, dict) else f"`{json.dumps(default)}`"
        description = _cell(f"{node.get('description', '')} {_notes(node, required)}")
        yield f"| `{path}` | {_type(node)} | {shown} | {description} |"
    if node.get("type") == "array" and "properties" in node["items"]:
        node, path = node["items"], f"{path}[]"
    for name, child in node.get("properties", {}).items():
        yield from _rows(child, f"{path}.{name}", name in node.get("required", ()))


def _kind_section(kind: AnyKind) -> str:
    lines = [
        f"### {kind.kind} (`{kind.short_name}`)",
        "",
        kind.description,
        "",
        "| field | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    lines += _rows(openapi_schema(kind.spec), "spec", True)
    lines += ["", f"Status fields of {kind.kind}:", "", "| field | type | description |", "| --- | --- | --- |"]
    for name, node in openapi_schema(kind.status)["properties"].items():
        lines.append(f"| `status.{name}` | {_type(node)} | {_cell(node.get('description', ''))} |")
    return "\n".join(lines)


def reference() -> str:
    """The generated reference, markers included."""
    sections = "\n\n".join(_kind_section(kind) for kind in KINDS)
    return f"{BEGIN}\n{sections}\n{END}"


def with_reference(readme: str) -> str:
    """`readme` with its generated reference replaced by the current one."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[:start] + reference() + readme[end:]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m scaleml_api.reference README.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(with_reference(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
