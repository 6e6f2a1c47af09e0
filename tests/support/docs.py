"""The Markdown pages of the repository and the example objects they show."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from scaleml_api.base import API_VERSION
from scaleml_local import kubectl_yaml
from tests.support.manifests import ROOT, Manifest

README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def yaml_blocks(path: Path) -> Iterator[tuple[int, str]]:
    """The ```yaml blocks of `path`, with the line each starts on."""
    block: list[str] | None = None
    start = 0
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if block is None and re.match(r"^\s*```ya?ml\s*$", line):
            block, start = [], number
        elif block is not None and FENCE.match(line):
            yield start, "\n".join(block)
            block = None
        elif block is not None:
            block.append(line)


def example_objects() -> Iterator[tuple[Path, int, Manifest]]:
    """Every TrainingJob, ModelDeployment and DriftMonitor the pages show: page, line of its block, object.

    Read as kubectl reads it (`scaleml local` too): "1e-3" is a number there, a string to PyYAML."""
    for path in markdown_files():
        for line, block in yaml_blocks(path):
            for document in kubectl_yaml.load_all(block):
                if isinstance(document, dict) and document.get("apiVersion") == API_VERSION:
                    yield path, line, document
