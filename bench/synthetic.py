"""The synthetic tabular dataset the training and serving benchmarks train on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]


def write_classification_data(directory: Path, rows: int, features: int) -> None:
    """`directory/train.parquet`: `features` standard normal columns x0.. and a binary `label`.

    The label depends on the first four features plus noise, so the model has something to learn
    and the benchmarks measure real training, not a constant.
    """
    rng = np.random.default_rng(0)
    values = rng.normal(size=(rows, features)).astype(np.float32)
    label = (values[:, :4].sum(axis=1) + 0.5 * rng.normal(size=rows) > 0).astype(np.int64)
    table = pa.table({**{f"x{index}": values[:, index] for index in range(features)}, "label": label})
    directory.mkdir(parents=True)
    pq.write_table(table, directory / "train.parquet")
