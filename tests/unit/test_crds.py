from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from scaleml_api.crdgen import crd, crd_files
from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import KINDS, MODEL_DEPLOYMENT
from tests.support.manifests import CRDS


def test_checked_in_crds_match_the_models() -> None:
    """crds/ is generated; run `make crds` after changing an API model."""
    generated = crd_files()
    on_disk = {path.name: path.read_text() for path in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(generated)
    for name, content in generated.items():
        assert on_disk[name] == content, f"crds/{name} is stale: run `make crds`"


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{}}")


def _schema(kind: AnyKind) -> dict[str, Any]:
    return crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: AnyKind) -> None:
    """Every node has a type (or is int-or-string, or a free-form value) and none uses JSON-Schema-only keywords."""
    for path, node in _nodes(_schema(kind)):
        for keyword in ("$ref", "title", "const"):
            assert keyword not in node, f"{kind.kind}{path} has {keyword}"
        assert (
            node.get("type")
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{kind.kind}{path} has no type"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{kind.kind}{path}: only int-or-string may use anyOf"
        if isinstance(node.get("exclusiveMinimum"), float | int) and not isinstance(node["exclusiveMinimum"], bool):
            pytest.fail(f"{kind.kind}{path}: exclusiveMinimum must be boolean in OpenAPI v3.0")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_every_user_field_is_described(kind: AnyKind) -> None:
    spec = _schema(kind)["properties"]["spec"]
    undocumented = [path for path, node in _nodes(spec, ".spec") if path and not node.get("description")]
    # Items of a list are described by the list itself.
    assert [p for p in undocumented if not p.endswith("[]") and not p.endswith("{}")] == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
@pytest.mark.parametrize("part", ["spec", "status"])
def test_strings_and_lists_are_bounded_so_cel_cost_is_bounded(kind: AnyKind, part: str) -> None:
    for path, node in _nodes(_schema(kind)["properties"][part], f".{part}"):
        if node.get("type") == "string" and "enum" not in node and node.get("format") != "date-time":
            assert "maxLength" in node, f"{kind.kind}{path} has no maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{kind.kind}{path} has no maxItems"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_free_form_values_are_bounded_in_size_and_depth(kind: AnyKind) -> None:
    # A value of no type may be a string, a list or a map: each of the three is bounded, and a map or
    # list in it only as deep as its own schema goes (a bound of 0 where it ends).
    for path, node in _nodes(_schema(kind)):
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        assert node.get("type") != "object", f"{kind.kind}{path} is a free-form object"
        assert {"maxLength", "maxItems", "maxProperties"} <= node.keys(), f"{kind.kind}{path} is unbounded"
        assert node["maxItems"] == 0 or "items" in node, f"{kind.kind}{path}: its lists' items are unbounded"
        assert node["maxProperties"] == 0, f"{kind.kind}{path}: its maps' values are unbounded"


def test_cross_field_rules_of_the_issue_are_in_the_schema() -> None:
    rules = {
        kind.kind: [
            rule["rule"] for _, node in _nodes(_schema(kind)) for rule in node.get("x-kubernetes-validations", [])
        ]
        for kind in KINDS
    }
    assert any("self.elastic.minWorkers <= self.resources.workers" in rule for rule in rules["TrainingJob"])
    assert any("has(self.repository)" in rule for rule in rules["ModelDeployment"])
    assert any("preferredBatchSizes.all" in rule for rule in rules["ModelDeployment"])


def test_nested_sections_default_so_their_fields_default() -> None:
    spec = _schema(KINDS[0])["properties"]["spec"]["properties"]
    assert spec["resources"]["default"] == {"workers": 1, "gpusPerWorker": 0, "cpu": "1", "memory": "2Gi"}
    assert spec["resources"]["properties"]["workers"]["default"] == 1
    assert "default" not in spec["elastic"], "an absent elastic section must stay absent"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_names_subresources_and_columns(kind: AnyKind) -> None:
    definition = crd(kind)["spec"]
    assert definition["names"]["shortNames"] == [kind.short_name]
    assert definition["names"]["categories"] == ["scaleml"]
    version = definition["versions"][0]
    assert "status" in version["subresources"]
    assert ("scale" in version["subresources"]) == (kind is MODEL_DEPLOYMENT)
    assert version["additionalPrinterColumns"][-1]["name"] == "Age"


def test_crd_files_are_valid_yaml_with_a_header() -> None:
    files = crd_files()
    for kind in KINDS:
        content = files[f"{kind.crd_name}.yaml"]
        assert content.startswith("# Generated")
        assert yaml.safe_load(content)["kind"] == "CustomResourceDefinition"
    assert yaml.safe_load(files["kustomization.yaml"])["resources"] == sorted(f"{k.crd_name}.yaml" for k in KINDS)
