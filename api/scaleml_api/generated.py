"""Writing generated files (the CRDs, the reference pages) into the directory a command names."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Writes each file name -> content of `files` into `directory`, made if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content)


def main(argv: list[str], usage: str, files: Callable[[], Mapping[str, str]]) -> int:
    """The command `usage` describes: writes `files()` into the one directory of `argv`."""
    if len(argv) != 1:
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    write_files(Path(argv[0]), files())
    return 0
