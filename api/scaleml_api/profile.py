"""The reference profile of a model's training data, written next to each exported version.

The training workload writes `profile.json` into every version directory of the model repository;
the drift monitor reads it and compares windows of captured live requests with it. Both sides
parse it with these models, so a change here is a change of the file format (bump
`PROFILE_SCHEMA_VERSION`).

What a feature is. The served model takes one tensor, `INPUT__0` (see `DataProfile.input`), and
every feature says how to read its values out of a captured batch of that tensor:

- `reduction: none` — the feature is the column `INPUT__0[:, index]` of a two-dimensional input
  (tabular data): one value per row.
- `reduction: mean` — the feature is, per row, the mean of `INPUT__0[:, ..., index, ...]` with
  `index` taken on `axis` and every other non-batch axis averaged (a channel of an image, a
  feature of a sequence): one value per row.
- `reduction: pool` — every element of `INPUT__0` is an observation of this categorical feature
  (the token ids of a text model): counts only, no per-row value and no place in the sample.

Categorical features were strings in the data file. The model sees their integer code (the index
of the category in `categories`, which are sorted); the profile keeps both the category and its
code, so the monitor can compare either captured codes or raw strings. A missing value is NaN in
the input tensor.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, StringConstraints

from scaleml_api.base import ApiModel

# 2: features carry their importance to the model, and a classifier's profile its calibration.
PROFILE_SCHEMA_VERSION: Final = 2
# Bounds that keep a profile small whatever the data: categories listed per feature, sampled rows.
MAX_PROFILED_CATEGORIES: Final = 1000
MAX_SAMPLE_ROWS: Final = 5000

# Triton's data types of the tensors a ScaleML model takes and gives.
TritonDataType = Literal["TYPE_FP32", "TYPE_INT64"]


class TensorSpec(ApiModel):
    """One input or output tensor of the served model, as Triton declares it."""

    # Rendered into Triton's config.pbtxt: an identifier, nothing that could end the quoted string.
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)] = Field(
        description="Tensor name in the served model (INPUT__0, OUTPUT__0)."
    )
    data_type: TritonDataType = Field(description="Triton data type.")
    dims: list[int] = Field(description="Shape of one row, without the batch dimension.")


class Histogram(ApiModel):
    """Histogram over [min, max] of the non-missing values, on the edges it lists.

    Training writes bins of about equal shares (every 2% of the values; a value holding more than
    that in a bin of its own); profiles written before, equal-width bins. Either is read as listed.
    """

    edges: list[float] = Field(description="Bin edges, one more than counts; the last bin includes its right edge.")
    counts: list[int] = Field(description="Values per bin.")


class NumericSummary(ApiModel):
    """Distribution of a numeric feature's non-missing values. Absent when every value is missing."""

    mean: float
    std: float = Field(description="Population standard deviation.")
    min: float
    max: float
    quantile_levels: list[float] = Field(description="Probabilities, ascending from 0 to 1.")
    quantiles: list[float] = Field(description="Value at each of quantileLevels (linear interpolation).")
    histogram: Histogram


class CategoryCount(ApiModel):
    """How often one category occurs."""

    value: str = Field(description="The category as written in the data file (token ids as decimal strings).")
    code: int = Field(description="The integer the model sees for it.")
    count: int
    frequency: float = Field(
        description="count divided by the feature's non-missing observations (those counted, see CategoricalSummary)."
    )


class CategoricalSummary(ApiModel):
    """Frequencies of a categorical feature, most frequent first, ties by code.

    A feature with more than MAX_PROFILED_CATEGORIES categories lists the most frequent on a random
    half of the rows (seen there at least 10 times) and counts them, and the others, on the other
    half: its counts sum to about half its observations, and they are as large as the categories'
    frequencies make them, not larger for having been chosen.
    """

    categories: list[CategoryCount] = Field(description="At most MAX_PROFILED_CATEGORIES entries.")
    other_count: int = Field(default=0, description="Observations of categories left out of the list.")
    cardinality: int = Field(description="Distinct categories seen.")


class FeatureProfile(ApiModel):
    """One feature: where it sits in the model input and how its values are distributed."""

    name: str = Field(description="Column name; array features are named ARRAY[INDEX].")
    kind: Literal["numeric", "categorical"]
    reduction: Literal["none", "mean", "pool"] = Field(
        description="How a row's value is read from INPUT__0 (see the module documentation)."
    )
    axis: int | None = Field(description="Axis of INPUT__0 (0 is the batch) that index applies to; None for pool.")
    index: int | None = Field(description="Position on axis; None for pool.")
    count: int = Field(description="Observations: rows, or elements for pool.")
    missing: int = Field(
        description="Observations that are missing (null or NaN) or, numeric, invalid (±inf): the monitor's missing."
    )
    numeric: NumericSummary | None = Field(default=None, description="For numeric features with any value.")
    categorical: CategoricalSummary | None = Field(default=None, description="For categorical features.")
    importance: float | None = Field(
        default=None,
        description="Permutation importance on the validation rows: the accuracy lost (classification) or the RMSE "
        "gained (regression, in the target's units) when this feature's values are shuffled across rows, mean over "
        "repeats. Near 0: the model ignores the feature; below 0 only by chance. None for pool features (one "
        "feature, nothing to rank), without validation rows, or in profiles written before it existed.",
    )


class TargetProfile(ApiModel):
    """The predicted column, for label drift: classes and their frequencies, or the value distribution."""

    name: str
    task: Literal["classification", "regression"]
    count: int
    numeric: NumericSummary | None = Field(default=None, description="For regression.")
    categorical: CategoricalSummary | None = Field(
        default=None, description="For classification: the original labels, coded as the model's output index."
    )


class DataSample(ApiModel):
    """A uniform random sample of rows, for tests that need raw values (KS, MMD).

    Empty (no rows, no columns) when the TrainingJob's `spec.output.profileSample` is `none`: the
    profile then holds aggregates only, and no row of the training data leaves its volume.
    """

    seed: int
    rows: int = Field(
        description="Rows in the sample: min(data rows, MAX_SAMPLE_ROWS); 0 with profileSample none (aggregates only)."
    )
    columns: dict[str, list[float | str | None]] = Field(
        description="Per feature (except pool features) and the target: the sampled rows' values, "
        "aligned across columns; categories as their original strings, missing values as null."
    )


class Calibration(ApiModel):
    """A classifier's confidence calibrated on its validation rows by temperature scaling.

    The calibrated probabilities are softmax(logits / temperature); their largest value, averaged
    over rows, estimates the accuracy on those rows without their labels (the monitor's estimate
    of live accuracy). Expected calibration error (ECE): the row-weighted mean, over equal-width
    confidence bins, of |accuracy - mean confidence| in the bin.
    """

    temperature: float = Field(gt=0.0, description="Divides the logits; above 1 the raw model was overconfident.")
    rows: int = Field(ge=1, description="Validation rows it was fitted and measured on.")
    validation_accuracy: float = Field(ge=0.0, le=1.0, description="Accuracy on those rows.")
    ece_before: float = Field(ge=0.0, le=1.0, description="ECE of the raw softmax on those rows.")
    ece_after: float = Field(ge=0.0, le=1.0, description="ECE of the calibrated softmax on those rows.")
    bins: int = Field(ge=1, description="Equal-width confidence bins of the ECE.")


class DataProfile(ApiModel):
    """The reference profile of a training data set."""

    schema_version: int = Field(default=PROFILE_SCHEMA_VERSION, description="Version of this format.")
    source: str = Field(description="Path of the data file inside its volume.")
    format: Literal["parquet", "csv", "npz"]
    sha256: str = Field(description="SHA-256 of the data file, hex.")
    rows: int = Field(description="Rows profiled (rows of the file with a target value).")
    input: TensorSpec = Field(description="The model input the features are read from.")
    features: list[FeatureProfile]
    target: TargetProfile | None = Field(
        default=None,
        description="The predicted column; None for a plain table profiled without one (`scaleml drift`).",
    )
    sample: DataSample
    calibration: Calibration | None = Field(
        default=None,
        description="Classifiers: the temperature that calibrates the model's confidence, fitted on the validation "
        "rows. None for regression, without validation rows, or in profiles written before it existed.",
    )
