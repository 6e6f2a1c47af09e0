"""The files `scaleml drift` compares: Parquet or CSV tables, or a reference profile a TrainingJob exported.

The format is the file's: Parquet by its magic bytes (or a .parquet/.pq name), a profile by a
.json name or a leading "{", anything else CSV (compressed by its extension, as pyarrow reads
it). Every problem raises `BadInputError` with a message that names the file, and the column where
there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

# pyarrow ships no type information.
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import ValidationError

from scaleml_api.profile import DataProfile
from scaleml_workloads.csvfiles import read_csv

PARQUET_MAGIC: Final = b"PAR1"
Format = Literal["parquet", "csv", "profile"]


class BadInputError(Exception):
    """Input that cannot be compared; the message names the file and column."""


def file_format(path: Path) -> Format:
    """What `path` holds, from its name and first bytes; BadInputError when it cannot be read at all."""
    try:
        with path.open("rb") as stream:
            head = stream.read(64)
    except OSError as error:
        raise BadInputError(f"{path}: {error.strerror or error}") from None
    if head.startswith(PARQUET_MAGIC) or path.suffix in (".parquet", ".pq"):
        return "parquet"
    if path.suffix == ".json" or head.lstrip().startswith(b"{"):
        return "profile"
    return "csv"


def read_table(path: Path, kind: Format) -> pa.Table:
    """A Parquet or CSV file as a table with at least one row."""
    try:
        table = pq.read_table(path) if kind == "parquet" else read_csv(path)
    except (pa.ArrowException, OSError) as error:
        raise BadInputError(f"{path}: cannot read it as {'Parquet' if kind == 'parquet' else 'CSV'}: {error}") from None
    if table.num_rows == 0:
        raise BadInputError(f"{path}: the table has no rows")
    return table


def read_profile(path: Path) -> DataProfile:
    """A reference profile as training writes it (profile.json)."""
    try:
        return DataProfile.model_validate_json(path.read_bytes())
    except OSError as error:
        raise BadInputError(f"{path}: {error.strerror or error}") from None
    except ValidationError as error:
        raise BadInputError(f"{path}: not a profile a TrainingJob exported: {error}") from None
