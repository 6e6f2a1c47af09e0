"""Drift between two tables, or between a table and a training profile, for Python callers and `scaleml drift`.

The same detector, profile builder and defaults as the DriftMonitor: a reference table is profiled
as training profiles its data (every row kept as raw values), a reference profile is read as the
monitor reads it, and the current table is checked with `DriftDetector.check_table`. Columns are
matched by name (see `tables`).

    >>> import pandas as pd
    >>> from scaleml_workloads.drift.comparison import compare
    >>> result = compare(pd.read_parquet("train.parquet"), {"age": [31, 45, None], "plan": ["pro", "basic", "max"]})
    >>> result.drift_detected, result.drifted_features
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from scaleml_api.profile import DataProfile
from scaleml_api.v1alpha1.driftmonitor import Tests, Thresholds
from scaleml_workloads.atomic import write_text_atomically
from scaleml_workloads.drift.detector import DriftDetector, DriftResult
from scaleml_workloads.drift.reference import Reference
from scaleml_workloads.drift.sources import BadInputError, file_format, read_profile, read_table
from scaleml_workloads.drift.tables import Columns, absent, read_columns, reference_values, window_gaps
from scaleml_workloads.monitor.reference import profile_detector
from scaleml_workloads.training.data import file_sha256
from scaleml_workloads.training.profile import profile_table


def compare(
    reference: object,
    current: object,
    *,
    features: Sequence[str] | None = None,
    tests: Tests | None = None,
    thresholds: Thresholds | None = None,
) -> DriftResult:
    """The drift of `current` from `reference`, feature by feature and as a whole.

    `reference`: a table (a pandas DataFrame, a pyarrow Table, or a dict of column name to numpy
    array or list; strings are categories, None or NaN missing) or a `DataProfile` a TrainingJob
    exported (`profile.json`, read with `DataProfile.model_validate_json`). `current`: a table.
    `features`: the column names to test, default every column of the reference. `tests` and
    `thresholds`: as a DriftMonitor's spec, default its defaults.

    Never raises on the tables' content: a column that is absent, unreadable or of the wrong kind
    is a feature without a statistic and a message (`FeatureResult.message`, `DriftResult.messages`).
    """
    if not isinstance(reference, DataProfile):
        reference = read_columns(reference)
    detector, notes = detector_for(reference, features or (), tests or Tests(), thresholds or Thresholds())
    return _checked(detector, notes, current, reference.names if isinstance(reference, Columns) else ())


def compare_files(
    reference: Path,
    current: Path,
    features: Sequence[str],
    tests: Tests,
    thresholds: Thresholds,
    save_profile: Path | None = None,
) -> DriftResult:
    """`compare` on files (`sources`), strictly: BadInputError, naming the file and column, for a feature either file
    cannot give (absent, unreadable, of the wrong kind), where `compare` would test the others.

    `save_profile`: where to write the reference table's profile, as training writes one (without a
    target), to be the reference of later comparisons without the table."""
    kind = file_format(reference)
    if kind == "profile":
        if save_profile is not None:
            raise BadInputError(f"{reference}: is a profile already; a profile is saved of a reference table")
        profile = read_profile(reference)
        known = {feature.name: feature for feature in profile.features}
        names = list(features) or list(known)
        if unknown := [name for name in names if name not in known]:
            raise BadInputError(f"{reference}: the profile has no feature {', '.join(map(repr, unknown))}")
        detector, notes = profile_detector(profile, tests, thresholds, features)
        tested = [known[name] for name in names]
        untested: Sequence[str] = ()
    else:
        columns = read_columns(read_table(reference, kind))
        if left_out := absent(columns, list(features) or list(columns.names)):
            raise BadInputError("\n".join(f"{reference}: {why}" for why in left_out.values()))
        detector, notes = table_detector(columns, features, tests, thresholds)
        tested = list(detector.reference.features)
        untested = columns.names
        if save_profile is not None:
            _save_profile(save_profile, reference, kind, columns, [feature.name for feature in tested])
    if (current_kind := file_format(current)) == "profile":
        raise BadInputError(f"{current}: a profile can only be the reference; the current data must be a table")
    window = read_columns(read_table(current, current_kind))
    if gaps := window_gaps(window, tested):
        raise BadInputError("\n".join(f"{current}: {why}" for why in gaps.values()))
    return _checked(detector, notes, window, untested)


def detector_for(
    reference: object, features: Sequence[str], tests: Tests, thresholds: Thresholds
) -> tuple[DriftDetector, list[str]]:
    """A detector against a reference profile or table, and what every result of it must say."""
    if isinstance(reference, DataProfile):
        return profile_detector(reference, tests, thresholds, features)
    return table_detector(read_columns(reference), features, tests, thresholds)


def table_detector(
    columns: Columns, features: Sequence[str], tests: Tests, thresholds: Thresholds
) -> tuple[DriftDetector, list[str]]:
    """A detector against a reference table (its `features`, default every column), and what its results must say."""
    names = list(dict.fromkeys(features)) or list(columns.names)
    if columns.rows == 0:
        # Nothing to compare with: no feature, rather than features without values.
        nothing = DriftDetector(Reference.from_arrays(np.empty((0, 0)), []), tests, thresholds)
        return nothing, [*columns.messages, "reference: the table has no rows; nothing is tested"]
    table, categories, left_out = reference_values(columns, names)
    kept = [name for name in names if name not in left_out]
    notes = [*columns.messages, *(f"reference: {why}; it is not tested" for why in left_out.values())]
    # As in a window: ±inf is invalid, counted as missing (the profile does), and said.
    infinite = np.isinf(table).sum(axis=0).tolist()
    notes += [
        f"reference: {count} values of {name!r} are ±inf (counted as missing)"
        for name, count in zip(kept, infinite, strict=True)
        if count
    ]
    return DriftDetector(Reference.from_arrays(table, kept, categories), tests, thresholds), notes


def _checked(detector: DriftDetector, notes: list[str], current: object, known: Sequence[str]) -> DriftResult:
    result = detector.check_table(current, known)
    return replace(result, messages=[*notes, *result.messages]) if notes else result


def _save_profile(
    path: Path, source: Path, kind: Literal["parquet", "csv"], columns: Columns, names: list[str]
) -> None:
    table, categories, _ = reference_values(columns, names)
    sha256 = file_sha256(source)
    profile = profile_table(table, names, categories, source=str(source), format=kind, sha256=sha256, seed=0)
    try:
        write_text_atomically(path, profile.model_dump_json(by_alias=True))
    except OSError as error:
        raise BadInputError(f"{path}: {error.strerror or error}") from None
