"""`kubectl kustomize`, as users and Argo CD build ScaleML's manifests."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import yaml

from tests.support.kubectl import KUBECTL
from tests.support.manifests import ROOT, Manifest

MANIFESTS: Final = ROOT / "manifests"
BASE: Final = MANIFESTS / "base"
OVERLAYS: Final = MANIFESTS / "overlays"
COMPONENTS: Final = MANIFESTS / "components"


def build(directory: Path) -> list[Manifest]:
    """The objects a kustomization renders."""
    result = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def overlay(directory: Path, resources: Sequence[Path], components: Sequence[Path] = ()) -> Path:
    """A kustomization of one's own in `directory`, as a user writes to include ScaleML's components.

    kustomize takes only relative paths to other kustomizations.
    """
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(path, directory) for path in resources],
        "components": [os.path.relpath(path, directory) for path in components],
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


def find(objects: Sequence[Manifest], kind: str, name: str) -> Manifest:
    for manifest in objects:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise LookupError(f"no {kind} {name} among {[(m['kind'], m['metadata']['name']) for m in objects]}")
