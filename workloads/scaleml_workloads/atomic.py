"""Replacing a small text file so that a reader sees the old content or the new, never a part."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_text_atomically(path: Path, content: str) -> None:
    """Writes `content` to a hidden file beside `path`, then renames it over `path`."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    temporary.write_text(content)
    os.replace(temporary, path)
