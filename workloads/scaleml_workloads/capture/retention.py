"""Retention of captured requests: what the capture converter deletes from its captures directory.

Captured inputs and outputs are user data, kept no longer than a ModelDeployment's
`spec.capture.retention` says. Every capture converter sweeps its ModelDeployment's own directory
on the claim, never another's (the pods of one ModelDeployment sweep each other's files too;
whoever deletes a file first wins):

- a complete file whose first row (the time in its name) is older than `max_age` is deleted, so
  no row is kept longer than that;
- a hidden file (one a writer that died left half-written) is deleted once it is that old too,
  by its modification time, or an hour old when `max_age` is shorter: a writer finishes its file
  in seconds;
- then, while the files together take more than `max_bytes`, the oldest is deleted.

Anything else in the directory is left alone.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from scaleml_workloads.capture.files import first_row_time

# A hidden file younger than this may still be being written.
_UNFINISHED_GRACE_SECONDS: Final = 3600.0


@dataclass(frozen=True)
class Retention:
    """How long, and how much, a captures directory keeps."""

    max_age_seconds: float
    max_bytes: int


@dataclass(frozen=True)
class Swept:
    """What one sweep deleted, and what it could not."""

    by_age: int = 0
    by_size: int = 0
    kept_bytes: int = 0
    errors: list[OSError] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    path: Path
    first_row: float
    size: int


def sweep(directory: Path, retention: Retention, now: float | None = None) -> Swept:
    """Deletes what `retention` no longer keeps of `directory`; `now` is the epoch time (default: the clock's)."""
    now = time.time() if now is None else now
    errors: list[OSError] = []
    complete: list[_Entry] = []
    by_age = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return Swept()  # nothing captured there yet
    except OSError as error:
        return Swept(errors=[error])
    for entry in entries:
        first_row = first_row_time(entry.name)
        if first_row is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted by another pod meanwhile
        except OSError as error:
            errors.append(error)
            continue
        if not stat.S_ISREG(info.st_mode):
            continue
        if entry.name.startswith("."):
            expired = now - info.st_mtime > max(retention.max_age_seconds, _UNFINISHED_GRACE_SECONDS)
        else:
            expired = now - first_row > retention.max_age_seconds
        if expired:
            by_age += _delete(Path(entry.path), errors)
        elif not entry.name.startswith("."):
            complete.append(_Entry(Path(entry.path), first_row, info.st_size))
    complete.sort(key=lambda kept: (kept.first_row, kept.path.name))
    total = sum(kept.size for kept in complete)
    by_size = 0
    for oldest in complete:
        if total <= retention.max_bytes:
            break
        by_size += _delete(oldest.path, errors)
        total -= oldest.size
    return Swept(by_age, by_size, total, errors)


def _delete(path: Path, errors: list[OSError]) -> int:
    """1 when this call deleted `path`; 0 when it was gone already or cannot be deleted (the error is kept)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as error:
        errors.append(error)
        return 0
    return 1
