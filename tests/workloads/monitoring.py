"""Building blocks of the monitor tests: capture files of churn traffic, as the capture converter writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]

from scaleml_api.profile import DataProfile
from scaleml_workloads.capture.files import CaptureFiles, Sample, Tensor


def model_inputs(profile: DataProfile, table: pa.Table) -> npt.NDArray[np.float32]:
    """INPUT__0 of the churn model for the rows of `table`: features in the profile's places, categories as codes."""
    rows = table.num_rows
    inputs = np.full((rows, *profile.input.dims), np.nan, dtype=np.float32)
    for feature in profile.features:
        column = table.column(feature.name).to_numpy(zero_copy_only=False)
        if feature.kind == "categorical" and feature.categorical is not None:
            codes = {category.value: category.code for category in feature.categorical.categories}
            values = np.array([codes.get(str(value), np.nan) for value in column], dtype=np.float32)
        else:
            values = np.asarray(column, dtype=np.float32)
        inputs[:, feature.index] = values
    return inputs


def write_window(
    directory: Path,
    inputs: npt.NDArray[np.float32],
    start: float,
    batch: int = 50,
    outputs: npt.NDArray[np.float32] | None = None,
    model_version: str = "1",
    model: str = "churn",
) -> None:
    """Captures of `inputs` in requests of `batch` rows from time `start` on, in one complete file.

    The answers are `outputs` (the model's, row for row), or zeros, given by `model` at `model_version`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = CaptureFiles(directory, "parquet", rows_per_file=len(inputs), seconds_per_file=3600)
    for offset in range(0, len(inputs), batch):
        part = inputs[offset : offset + batch]
        answers = np.zeros((len(part), 2), dtype=np.float32) if outputs is None else outputs[offset : offset + batch]
        files.add(
            Sample(
                timestamp=start + offset / 1000,
                model=model,
                model_version=model_version,
                request_id="",
                inputs=(Tensor("INPUT__0", "FP32", part),),
                outputs=(Tensor("OUTPUT__0", "FP32", answers),),
            )
        )
    files.flush()
