"""What live windows are compared with: the features of a reference profile and raw values of the numeric ones.

A `Reference` comes from the `DataProfile` training exports next to each model version
(summaries of all training rows, raw values of a sample of at most MAX_SAMPLE_ROWS rows), or from
raw arrays, whose summaries the same builder makes and whose raw values are all kept (for large
references in benchmarks and tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from scaleml_api.profile import DataProfile, FeatureProfile, TensorSpec
from scaleml_workloads.export.formats import INPUT_NAME
from scaleml_workloads.training.profile import feature_profile

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Reference:
    """The reference features and, per numeric feature read per row, its raw values (NaN missing, rows aligned)."""

    input: TensorSpec
    features: tuple[FeatureProfile, ...]
    values: Mapping[str, Floats]

    @property
    def rows(self) -> int:
        """Rows of raw values (the profile's sample, or every row of the arrays)."""
        return max((len(column) for column in self.values.values()), default=0)

    def feature(self, name: str) -> FeatureProfile | None:
        return next((feature for feature in self.features if feature.name == name), None)

    @classmethod
    def from_profile(cls, profile: DataProfile) -> Reference:
        """Summaries from the profile; raw values from its sample."""
        values: dict[str, Floats] = {}
        for feature in profile.features:
            column = profile.sample.columns.get(feature.name)
            if feature.kind == "numeric" and column is not None:
                # The profile writes missing values as null and numeric values as numbers.
                values[feature.name] = np.array(
                    [value if isinstance(value, int | float) else np.nan for value in column], dtype=np.float64
                )
        return cls(profile.input, tuple(profile.features), values)

    @classmethod
    def from_arrays(
        cls,
        data: npt.ArrayLike,
        names: Sequence[str] | None = None,
        categories: Mapping[str, Sequence[str]] | None = None,
    ) -> Reference:
        """A table (rows, features) as the model takes it: one column per feature, NaN for missing values.

        `categories` maps a categorical feature's name to its categories in code order; its column
        holds the codes. The features are named `names` (default x0, x1, ...). Summaries are those
        training writes into a profile; every row is kept as raw values.
        """
        table = np.asarray(data, dtype=np.float64)
        if table.ndim != 2:
            raise ValueError(f"a reference table has two dimensions (rows, features), not shape {table.shape}")
        labels = list(names) if names is not None else [f"x{index}" for index in range(table.shape[1])]
        if len(labels) != table.shape[1]:
            raise ValueError(f"{len(labels)} names for {table.shape[1]} columns")
        categories = categories or {}
        features: list[FeatureProfile] = []
        values: dict[str, Floats] = {}
        for index, name in enumerate(labels):
            column = table[:, index]
            named = categories.get(name)
            features.append(feature_profile(name, column, "none", index, list(named) if named is not None else None))
            if named is None:
                values[name] = column
        model_input = TensorSpec(name=INPUT_NAME, data_type="TYPE_FP32", dims=[table.shape[1]])
        return cls(model_input, tuple(features), values)
