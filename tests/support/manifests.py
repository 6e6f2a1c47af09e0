"""Example manifests and variations of them, for tests that state only the fields they care about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scaleml_api.merge import merge_patch
from scaleml_local import kubectl_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
CRDS = ROOT / "crds"

Manifest = dict[str, Any]


def load_all(path: Path) -> list[Manifest]:
    """The objects of a YAML file, as kubectl reads them."""
    return [doc for doc in kubectl_yaml.load_all(path.read_text()) if doc]


def example(kind: str) -> Manifest:
    """The first example object of `kind` in manifests/examples/."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in load_all(path):
            if doc["kind"] == kind:
                return doc
    raise LookupError(f"no example of kind {kind}")


def merged(base: Manifest, changes: Manifest) -> Manifest:
    """`base` with `changes` merged in, recursively; a None value removes the key."""
    return merge_patch(base, changes)
