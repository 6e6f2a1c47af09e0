"""Reading a CSV file as training and `scaleml drift` both read it, so that the two agree on every cell."""

from __future__ import annotations

from pathlib import Path
from typing import Final

# pyarrow ships no type information.
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]

# Without it pyarrow reads an empty cell of a text column as the string "", a category of its own, where the
# same cell of a numeric column is missing.
_CONVERT: Final = pacsv.ConvertOptions(strings_can_be_null=True)


def read_csv(path: Path) -> pa.Table:
    """The CSV file at `path`, every empty cell missing; pyarrow's errors (ArrowException, OSError) pass through."""
    return pacsv.read_csv(path, convert_options=_CONVERT)
