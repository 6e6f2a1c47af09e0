"""The names of capture files: they sort by the time of their first row and say which pod wrote them."""

from __future__ import annotations

import logging
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from scaleml_api.v1alpha1.modeldeployment import CaptureFormat

log = logging.getLogger(__name__)

# Set by the operator from the downward API: pods sharing a volume write under their own names.
INSTANCE_ENV: Final = "POD_NAME"
PREFIX: Final = "captures-"
SUFFIXES: Final[dict[CaptureFormat, str]] = {"parquet": ".parquet", "npz": ".npz"}
_TIME_FORMAT: Final = "%Y%m%dT%H%M%S.%fZ"
_NAME: Final = re.compile(r"captures-(?P<time>\d{8}T\d{6}\.\d{6}Z)-(?P<instance>.+)-\d{6}\.(parquet|npz)")


def file_name(first_timestamp: float, instance: str, sequence: int, format: CaptureFormat) -> str:
    moment = datetime.fromtimestamp(first_timestamp, tz=UTC).strftime(_TIME_FORMAT)
    return f"{PREFIX}{moment}-{instance}-{sequence:06d}{SUFFIXES[format]}"


def this_instance() -> str:
    """The pod's name ($POD_NAME, else the host name), made safe for a file name."""
    name = os.environ.get(INSTANCE_ENV) or socket.gethostname()
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "unknown"


def first_row_time(name: str) -> float | None:
    """The epoch time of the first row of a capture file (hidden or not), from its name; None for other names."""
    match = _NAME.fullmatch(name.removeprefix("."))
    if match is None:
        return None
    return datetime.strptime(match["time"], _TIME_FORMAT).replace(tzinfo=UTC).timestamp()


def temporary_writer(name: str) -> str | None:
    """The instance writing the hidden (not yet complete) capture file `name`; None for other names."""
    match = _NAME.fullmatch(name[1:]) if name.startswith(".") else None
    return match["instance"] if match else None


def capture_files(directory: Path) -> list[Path]:
    """The complete capture files in `directory`, oldest first; none when it cannot be listed."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
    except FileNotFoundError:
        return []  # nothing captured yet: the converter makes the directory with its first file
    except OSError as error:
        log.warning("cannot list the captures in %s: %s", directory, error)
        return []
    return [directory / name for name in names if _NAME.fullmatch(name)]
