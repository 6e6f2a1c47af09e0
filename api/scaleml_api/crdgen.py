"""CustomResourceDefinitions generated from the API models.

pydantic emits JSON Schema 2020-12; the API server wants a *structural* OpenAPI v3.0 schema. The
translation: inline every $ref, drop titles, turn Optional into "may be absent", exclusive bounds
into the boolean form, free-form maps into x-kubernetes-preserve-unknown-fields, and give nested
sections a default of {} so that the API server fills in their own defaults (and CEL rules can
rely on them).

Run `python -m scaleml_api.crdgen crds/` (`make crds`) after changing a model.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from scaleml_api import generated
from scaleml_api.base import GROUP, VERSION
from scaleml_api.kind import CATEGORY, NAME_MESSAGE, NAME_PATTERN, AnyKind
from scaleml_api.v1alpha1 import KINDS

Schema = dict[str, Any]

# Keywords a structural schema may not carry, or that only JSON Schema tools need.
_DROPPED = ("title", "additionalProperties", "$defs", "discriminator", "propertyNames")
# Marks an unwrapped Optional[X] until its parent object sees it.
_OPTIONAL = "x-scaleml-optional"


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        # Keywords beside the $ref (a field's description, its default) win over the model's own.
        merged = {**copy.deepcopy(defs[name]), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return schema


def _is_null(schema: Schema) -> bool:
    return schema.get("type") == "null"


def _structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    schema = _resolve(copy.deepcopy(schema), defs)

    variants = schema.get("anyOf")
    if variants is not None and not schema.get("x-kubernetes-int-or-string"):
        non_null = [v for v in variants if not _is_null(v)]
        if len(non_null) != 1:
            raise ValueError(f"unsupported union in schema: {variants}")
        # Optional[X]: the field may be absent; the API never stores null. X is translated once, on
        # its own: a second pass over its properties would no longer see which of them are Optional
        # (their marks are consumed) and would give those sections defaults.
        del schema["anyOf"]
        optional = {**_structural(non_null[0], defs), **_structural(schema, defs), _OPTIONAL: True}
        if optional.get("default", 0) is None:
            del optional["default"]
        return optional

    patterned = schema.pop("patternProperties", None)
    if patterned:
        # A map with patterned keys: a structural schema has no patternProperties, so the values'
        # schema becomes additionalProperties and the keys are checked by the field's CEL rule.
        (values,) = patterned.values()
        schema["additionalProperties"] = values

    out: Schema = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "const":
            out["enum"] = [value]
        elif key == "uniqueItems":
            out.setdefault("x-kubernetes-list-type", "set")
        elif key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        else:
            out[key] = value

    if out.get("type") == "object":
        extra = schema.get("additionalProperties")
        if "properties" in out:
            required = set(out.get("required", ()))
            for name, prop in out["properties"].items():
                optional = prop.pop(_OPTIONAL, False)
                # A section with defaults of its own is defaulted as a whole, so the API server fills
                # in its fields (and CEL rules may rely on them); an Optional section stays absent,
                # so that has() tells whether the user set it.
                if prop.get("type") == "object" and "properties" in prop and name not in required and not optional:
                    prop["default"] = _default_of(prop)
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = _structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("required") == []:
        del out["required"]
    return out


def _default_of(section: Schema) -> Schema:
    # Spelled out in full rather than {}: the API server checks a default against the section's CEL
    # rules as written, without defaulting inside it first.
    return {name: prop["default"] for name, prop in section["properties"].items() if "default" in prop}


def openapi_schema(model: type[Any]) -> Schema:
    """The structural OpenAPI v3 schema of a pydantic model, camelCase keys."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(raw, raw.get("$defs", {}))


def _printer_columns(kind: AnyKind) -> list[Schema]:
    columns = []
    for column in kind.columns:
        entry: Schema = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
        if column.description:
            entry["description"] = column.description
        if column.priority:
            entry["priority"] = column.priority
        columns.append(entry)
    return columns


def crd(kind: AnyKind) -> Schema:
    """The CustomResourceDefinition of one kind."""
    root: Schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.matches('{NAME_PATTERN}')",
                "message": NAME_MESSAGE,
                "fieldPath": ".metadata.name",
            }
        ],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {
                "type": "object",
                "properties": {
                    # Names of child objects derive from it.
                    "name": {"type": "string", "maxLength": kind.max_name_length},
                },
            },
            "spec": openapi_schema(kind.spec),
            "status": openapi_schema(kind.status),
        },
    }
    subresources: Schema = {"status": {}}
    if kind.scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.crd_name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": subresources,
                    "additionalPrinterColumns": _printer_columns(kind),
                }
            ],
        },
    }


def render(kind: AnyKind) -> str:
    header = "# Generated from the API models by `make crds`; do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def crd_files() -> dict[str, str]:
    """File name -> content for every CRD, and the kustomization that lists them."""
    files = {f"{kind.crd_name}.yaml": render(kind) for kind in KINDS}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    files["kustomization.yaml"] = (
        "# The CRDs as a kustomize base of their own, so that GitOps tools can sync them separately.\n"
        + yaml.safe_dump(kustomization, sort_keys=False)
    )
    return files


def main(argv: list[str]) -> int:
    return generated.main(argv, "python -m scaleml_api.crdgen OUTPUT_DIR", crd_files)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
