"""The Triton model repository on disk: `<root>/<model>/config.pbtxt` and numbered version directories.

A version directory appears complete or not at all: it is written under a hidden name inside the
model directory (Triton skips names that are not numbers) and then renamed to its number. Two
writers racing for the same number cannot both win, because renaming a directory onto a non-empty
one fails; the loser takes the next number.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

_STAGING_PREFIX: Final = ".staging-"
_VERSION = re.compile(r"^[1-9][0-9]*$")


def versions(model_dir: Path) -> list[int]:
    """The version numbers present in a model directory, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(entry.name) for entry in model_dir.iterdir() if _VERSION.fullmatch(entry.name) and entry.is_dir())


def resolve_version(root: Path, model_name: str, reference: str) -> Path:
    """The version directory that `reference` names: "N", "latest", or "MODEL/N" / "MODEL/latest".

    Raises LookupError saying what is missing.
    """
    model, _, version = reference.rpartition("/")
    model_dir = root / (model or model_name)
    present = versions(model_dir)
    if version == "latest":
        if not present:
            raise LookupError(f"no version exists in {model_dir}")
        return model_dir / str(present[-1])
    if int(version) not in present:
        listing = ", ".join(map(str, present)) or "none"
        raise LookupError(f"version {version} does not exist in {model_dir} (versions: {listing})")
    return model_dir / version


def staging_dir(model_dir: Path) -> Path:
    """A fresh hidden directory inside the model directory (same file system, so a rename is atomic)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
    path.mkdir()
    return path


def publish(staging: Path, finish: Callable[[Path, int], Iterable[Path]] | None = None) -> int:
    """Rename a complete staging directory to the next free version number, and return that number.

    `finish(staging, version)` writes what must know the number (the transparency report) and
    returns those files; it runs again with the next number when another writer took this one.
    """
    model_dir = staging.parent
    _fsync_tree(staging)
    while True:
        present = versions(model_dir)
        version = present[-1] + 1 if present else 1
        if finish is not None:
            # Only what finish wrote is new since the whole tree was synced.
            for path in finish(staging, version):
                _fsync(path)
            _fsync(staging)
        try:
            os.rename(staging, model_dir / str(version))
        except OSError as error:
            # Another writer took this number first: its directory is not empty, so ours is refused.
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                log.info("version %d of %s was taken by another writer; trying the next", version, model_dir)
                continue
            raise
        _fsync(model_dir)
        return version


def write_once(path: Path, content: str) -> bool:
    """Create `path` with `content` unless it exists, atomically; returns whether this call created it."""
    temporary = path.with_name(f"{_STAGING_PREFIX}{uuid.uuid4().hex}-{path.name}")
    temporary.write_text(content)
    _fsync(temporary)
    try:
        # A hard link, unlike a rename, refuses to replace an existing file.
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink()
    _fsync(path.parent)
    return True


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(directory: Path) -> None:
    for entry in directory.rglob("*"):
        _fsync(entry)
    _fsync(directory)
