"""The newest rows of captures directories: newest file first, within a bound in bytes, past what cannot be read."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from scaleml_workloads.capture.files.layout import (
    MODEL,
    MODEL_VERSION,
    RESERVED_NAMES,
    STRING_COLUMNS,
    TIMESTAMP,
    Array,
)
from scaleml_workloads.capture.files.names import capture_files
from scaleml_workloads.capture.files.reading import TooLargeError, columns_nbytes, read_capture_file

log = logging.getLogger(__name__)

SkipReason = Literal["unreadable", "layout", "too_large"]


@dataclass(frozen=True)
class Skipped:
    """A capture file the reader left out of a window, and why."""

    path: Path
    reason: SkipReason  # unreadable (truncated, foreign), layout (other tensors than newer files), too_large
    detail: str


@dataclass(frozen=True)
class CaptureWindow:
    """The newest rows of captures directories, by column, with what was left out."""

    columns: dict[str, Array]
    skipped: tuple[Skipped, ...] = ()
    # Rows ended before the number asked for because the next file would have passed max_bytes.
    bytes_limited: bool = False
    nbytes: int = 0
    # Rows of the files read left out because another model version than the one asked for answered them.
    other_versions: int = 0
    # Rows of the files read left out because another model than the one asked for answered them.
    other_models: int = 0

    @property
    def rows(self) -> int:
        return len(self.columns[TIMESTAMP]) if TIMESTAMP in self.columns else 0


def read_window(
    directories: Path | str | Sequence[Path | str],
    newest_rows: int,
    tensors: Sequence[str] | None = None,
    *,
    max_bytes: int | None = None,
    strings: bool = True,
    model: str | None = None,
    model_version: str | None = None,
) -> CaptureWindow:
    """The newest `newest_rows` rows (fewer when there are not that many) of the complete files in `directories`
    (one, or several whose files are taken together, by time).

    With `model`, only the rows that model answered, and with `model_version`, only those of that
    version: the others are read (and count against `max_bytes`) but left out and counted in
    `other_models` and `other_versions`; a file without a row kept is never compared with the
    others' tensors.

    Reads the newest files first until it has enough rows, and returns the rows in time order as
    `read_capture_file` does, with `tensors` (default: those of the newest file read). At most
    `max_bytes` of columns are read: each file's size is checked against what is left before its
    data is read, and the window ends before the first file that does not fit (a file larger than
    `max_bytes` on its own is skipped). A file that cannot be read, whatever it holds, or whose
    tensors differ in datatype or row shape from the newest file's, is skipped with a log line and
    named in `skipped`: nothing in a file makes this raise.
    """
    if newest_rows < 1:
        raise ValueError(f"newest_rows must be at least 1, not {newest_rows}")
    parts: list[dict[str, Array]] = []
    skipped: list[Skipped] = []
    rows = used = other_models = other_versions = 0
    limited = False
    wanted = {column: value for column, value in ((MODEL, model), (MODEL_VERSION, model_version)) if value is not None}
    read_strings = STRING_COLUMNS if strings else tuple(wanted)
    listed = [directories] if isinstance(directories, Path | str) else directories
    paths = sorted((path for directory in listed for path in capture_files(Path(directory))), key=lambda p: p.name)
    for path in reversed(paths):
        if rows >= newest_rows:
            break
        left = None if max_bytes is None else max_bytes - used
        try:
            part = read_capture_file(path, tensors, max_bytes=left, strings=read_strings)
        except TooLargeError as error:
            if parts:
                limited = True
                break
            skipped.append(Skipped(path, "too_large", str(error)))
        # Whatever a truncated or foreign file makes its reader raise costs that file only.
        except Exception as error:
            skipped.append(Skipped(path, "unreadable", f"{type(error).__name__}: {error}"))
        else:
            used += columns_nbytes(part)
            if wanted:
                part, left_out = _answered_by(part, wanted, keep_columns=strings)
                other_models += left_out[MODEL]
                other_versions += left_out[MODEL_VERSION]
                if not len(part[TIMESTAMP]):
                    continue
            if parts and not _same_layout(parts[0], part):
                skipped.append(Skipped(path, "layout", "its tensors differ from those of newer files"))
                continue
            if tensors is None:
                tensors = [name for name in part if name not in RESERVED_NAMES]
            parts.append(part)
            rows += len(part[TIMESTAMP])
    for skip in skipped:
        log.warning("skipping capture file %s (%s): %s", skip.path, skip.reason, skip.detail)
    if not parts:
        return CaptureWindow({}, tuple(skipped), limited, 0, other_versions, other_models)
    columns = {name: np.concatenate([part[name] for part in reversed(parts)])[-newest_rows:] for name in parts[0]}
    return CaptureWindow(columns, tuple(skipped), limited, columns_nbytes(columns), other_versions, other_models)


def read_captures(directory: Path | str, newest_rows: int, tensors: Sequence[str] | None = None) -> dict[str, Array]:
    """The columns of `read_window` (an empty dict when no file could be read), without a bound in bytes."""
    return read_window(directory, newest_rows, tensors).columns


def _answered_by(
    part: dict[str, Array], wanted: dict[str, str], *, keep_columns: bool
) -> tuple[dict[str, Array], dict[str, int]]:
    """The rows of `part` whose `model` and `model_version` columns hold what `wanted` says of them (without those
    columns unless `keep_columns`), and how many were left out: by model, then, of the model's rows, by version."""
    rows = len(part[TIMESTAMP])
    of_model = part[MODEL] == wanted[MODEL] if MODEL in wanted else np.ones(rows, dtype=bool)
    kept = of_model & (part[MODEL_VERSION] == wanted[MODEL_VERSION]) if MODEL_VERSION in wanted else of_model
    chosen = {name: array[kept] for name, array in part.items() if keep_columns or name not in wanted}
    left_model = rows - int(np.count_nonzero(of_model))
    return chosen, {MODEL: left_model, MODEL_VERSION: rows - left_model - int(np.count_nonzero(kept))}


def _same_layout(reference: dict[str, Array], other: dict[str, Array]) -> bool:
    return reference.keys() == other.keys() and all(
        name in STRING_COLUMNS or (array.dtype == other[name].dtype and array.shape[1:] == other[name].shape[1:])
        for name, array in reference.items()
    )
