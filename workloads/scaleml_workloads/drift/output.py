"""A drift result as `scaleml drift` prints it: a table for people, JSON for programs.

The JSON is the `DriftResult` itself, every field in camelCase (a field added to the result
appears without a change here), with the window's verdict first: `driftDetected`, `driftScore`
(the result's `score`) and `driftedFeatures`. Numbers that are not finite are null.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Final

from pydantic.alias_generators import to_camel

from scaleml_workloads.drift.detector import DriftResult, FeatureResult
from scaleml_workloads.drift.results import number

# The names the DriftMonitor's status gives the result's fields.
_STATUS_NAMES: Final = {"score": "driftScore"}
_FIRST: Final = ("driftDetected", "driftScore", "driftedFeatures")
# The features' table, the same in the terminal and in the monitor's report: its columns, and each feature's cells.
FEATURE_COLUMNS: Final = (
    "feature",
    "kind",
    "test",
    "statistic",
    "p-value",
    "q-value",
    "threshold",
    "drifted",
    "importance",
    "evidence",
    "rows",
    "missing",
    "missing (reference)",
    "note",
)


def feature_cells(feature: FeatureResult) -> list[str]:
    """One feature's row of the features' table, as text."""
    return [
        feature.name,
        feature.kind,
        feature.test,
        number(feature.statistic),
        number(feature.p_value),
        number(feature.q_value),
        number(feature.threshold),
        "yes" if feature.drifted else "no",
        f"{feature.importance:.2f}",
        f"{feature.evidence:.2f}",
        str(feature.rows),
        f"{feature.missing_fraction:.1%}",
        f"{feature.reference_missing_fraction:.1%}",
        feature.message,
    ]


def as_json(result: DriftResult) -> str:
    wire = {_STATUS_NAMES.get(key, to_camel(key)): _wire(value) for key, value in _fields(result).items()}
    ordered = {key: wire.pop(key) for key in _FIRST if key in wire}
    return json.dumps({**ordered, **wire}, indent=2, allow_nan=False)


def as_table(result: DriftResult) -> str:
    """The verdict and why, one line per feature, the multivariate test and the messages."""
    verdict = "drift detected" if result.drift_detected else "no drift"
    lines = [
        f"{verdict}: {len(result.drifted_features)} of {len(result.features)} features drifted, "
        f"score {result.score:.3f}; {result.rows} rows, {result.rows_rejected} rejected",
        *([result.verdict] if result.verdict else []),
    ]
    rows = [feature_cells(feature) for feature in result.features]
    widths = [max(len(cell) for cell in column) for column in zip(FEATURE_COLUMNS, *rows, strict=True)]
    for row in [list(FEATURE_COLUMNS), *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if (mmd := result.multivariate) is not None:
        state = "drifted" if mmd.drifted else "stable"
        lines.append(
            f"multivariate {mmd.test}: statistic {number(mmd.statistic)}, p-value {mmd.p_value_text()}, {state}"
        )
    lines.extend(f"note: {message}" for message in result.messages)
    return "\n".join(lines)


def _fields(value: Any) -> dict[str, Any]:
    return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}


def _wire(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {to_camel(key): _wire(item) for key, item in _fields(value).items()}
    if isinstance(value, list | tuple):
        return [_wire(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
