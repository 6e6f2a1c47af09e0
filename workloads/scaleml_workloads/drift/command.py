"""`scaleml drift`, added to the `scaleml` command through its entry points.

Exit status as `diff`'s: 0 no drift, 1 drift, 2 bad input (with a message naming the file and
column) or any other error (one line naming it, where Python would exit 1, as for drift). The
options for tests and thresholds are the DriftMonitor's `Tests` and `Thresholds`, with their
defaults: one option per threshold field, so a field added there is an option here.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from scaleml_api.v1alpha1.driftmonitor import Tests, Thresholds

EXIT_NO_DRIFT: Final = 0
EXIT_DRIFT: Final = 1
EXIT_BAD_INPUT: Final = 2  # and any other error

# Thresholds of what a table cannot show: the estimated accuracy needs the model's outputs.
_NOT_FOR_TABLES: Final = frozenset({"accuracy_drop"})
_EPILOG: Final = (
    "Columns are matched by name; string columns are categorical. "
    "Exit status: 0 no drift, 1 drift, 2 bad input or error."
)


def register(commands: Any) -> None:
    """Adds `drift` to the `scaleml` command's subparsers."""
    drift = commands.add_parser(
        "drift",
        help="Compare two tables for drift with the DriftMonitor's tests "
        "(exit 0 no drift, 1 drift, 2 bad input or error).",
        description="Compare a current table with a reference: per column, and all numeric columns together.",
        epilog=_EPILOG,
    )
    drift.add_argument(
        "--reference",
        required=True,
        type=Path,
        metavar="REF",
        help="Parquet or CSV file, or the profile.json a TrainingJob exported next to a model version.",
    )
    drift.add_argument("--current", required=True, type=Path, metavar="CUR", help="Parquet or CSV file.")
    drift.add_argument(
        "--features",
        type=_names,
        default=(),
        metavar="A,B",
        help="Comma-separated columns to test (default: every column of REF, or every feature of its profile).",
    )
    drift.add_argument(
        "--tests",
        type=_tests,
        default=Tests(),
        metavar="KIND=TEST,...",
        help=f"Tests by kind of feature, e.g. numeric=psi,multivariate=none (default: {_pairs(Tests())}).",
    )
    for name, field in _thresholds().items():
        option = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        drift.add_argument(
            option, dest=f"threshold_{name}", metavar="VALUE", help=f"{field.description} (default: {default})"
        )
    drift.add_argument("--html", type=Path, metavar="FILE", help="Also write the HTML report the DriftMonitor serves.")
    drift.add_argument(
        "--save-profile",
        type=Path,
        metavar="FILE",
        help="Also write the profile of the reference table, as training writes profile.json: a later REF.",
    )
    drift.add_argument("--format", choices=("table", "json"), default="table", help="Output (default: table).")
    drift.set_defaults(run=_drift)


def _drift(args: argparse.Namespace) -> int:
    try:
        return _compare(args)
    except Exception as error:
        # Unforeseen, but no verdict: the exit status of an error, and one line instead of a traceback.
        first = next(iter(str(error).splitlines()), "")
        return _bad_input(f"error: {type(error).__name__}: {first}" if first else f"error: {type(error).__name__}")


def _compare(args: argparse.Namespace) -> int:
    given = {name: value for name in _thresholds() if (value := getattr(args, f"threshold_{name}"))}
    try:
        thresholds = Thresholds.model_validate(given)
    except ValidationError as error:
        return _bad_input(_first_error(error, option=True))
    try:
        # Loaded only when the command runs: `scaleml` starts without torch, and runs where it is absent.
        from scaleml_workloads.drift.comparison import compare_files
        from scaleml_workloads.drift.output import as_json, as_table
        from scaleml_workloads.drift.sources import BadInputError
        from scaleml_workloads.monitor.report import render
    except ImportError as error:
        return _bad_input(f"needs the workloads extra ({error.name} is missing)")
    try:
        result = compare_files(args.reference, args.current, args.features, args.tests, thresholds, args.save_profile)
    except BadInputError as error:
        return _bad_input(str(error))
    # The report first: a path it cannot be written to is bad input, and bad input prints no result.
    if args.html is not None:
        page = render(
            result,
            monitor=f"{args.current} against {args.reference}",
            checked_at=datetime.now(UTC),
            reference_version=None,
            trend=[],
        )
        try:
            args.html.write_text(page)
        except OSError as error:
            return _bad_input(f"{args.html}: {error.strerror or error}")
    print(as_json(result) if args.format == "json" else as_table(result))
    return EXIT_DRIFT if result.drift_detected else EXIT_NO_DRIFT


def _thresholds() -> dict[str, FieldInfo]:
    """The fields of `Thresholds` that apply to tables, each an option."""
    return {name: field for name, field in Thresholds.model_fields.items() if name not in _NOT_FOR_TABLES}


def _bad_input(message: str) -> int:
    for line in message.splitlines():
        print(f"scaleml drift: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _tests(text: str) -> Tests:
    pairs = [part.partition("=") for part in text.split(",") if part.strip()]
    if any(not sep for _, sep, _ in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: expected KIND=TEST pairs, e.g. numeric=psi,categorical=js")
    try:
        return Tests.model_validate({kind.strip(): test.strip() for kind, _, test in pairs})
    except ValidationError as error:
        raise argparse.ArgumentTypeError(_first_error(error)) from None


def _pairs(tests: Tests) -> str:
    return ",".join(f"{key}={value}" for key, value in tests.model_dump().items())


def _first_error(error: ValidationError, *, option: bool = False) -> str:
    """The first problem, named by its field (or its command-line option)."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if option and where:
        where = "--" + where.replace("_", "-")
    return f"{where}: {first['msg']}" if where else str(first["msg"])
