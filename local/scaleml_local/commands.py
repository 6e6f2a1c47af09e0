"""`scaleml local apply|get|delete`: the objects of a state directory, shown with kubectl's columns."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

from scaleml_api.kind import AnyKind, PrinterColumn
from scaleml_api.v1alpha1 import KINDS
from scaleml_local.state import LocalError, Manifest, State, kind_named, read_manifests

SUPERVISOR_START_SECONDS: Final = 30.0
STOP_SECONDS: Final = 60.0


def start_supervisor(state: State) -> int:
    """The pid of the state directory's supervisor, started detached (it outlives this command) if none runs."""
    if (pid := state.supervisor_pid()) is not None:
        return pid
    state.root.mkdir(parents=True, exist_ok=True)
    with state.log_file.open("ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "scaleml_local.supervisor", "--state", str(state.root)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + SUPERVISOR_START_SECONDS
    while time.monotonic() < deadline:
        if (pid := state.supervisor_pid()) is not None:
            return pid
        time.sleep(0.1)
    raise LocalError(f"the supervisor did not start: see {state.log_file}")


def apply(state: State, paths: Iterable[Path]) -> list[str]:
    """Validates every document first, then stores them: a bad file applies nothing."""
    documents = read_manifests(paths)
    for document in documents:
        state.validate(document)
    return [state.apply(document) for document in documents]


def delete(state: State, paths: Iterable[Path] = (), *, everything: bool = False) -> list[str]:
    """Deletes the objects named in `paths` (or all), and waits until their processes have stopped."""
    if everything:
        targets = [(kind, m["metadata"]["name"]) for kind in KINDS for m in state.objects(kind)]
    else:
        targets = [
            (kind_named(d["kind"]), d["metadata"]["name"])
            for d in read_manifests(paths)
            if d.get("kind") != "PersistentVolumeClaim"
        ]
    said = [f"{kind.singular}/{name} deleted" for kind, name in targets if state.delete(kind, name)]
    keys = {f"{kind.plural}/{name}" for kind, name in targets}
    deadline = time.monotonic() + STOP_SECONDS
    while state.supervisor_pid() is not None and keys & set(state.processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if everything and (pid := state.supervisor_pid()) is not None:
        state.stop_supervisor()
        while state.supervisor_pid() == pid and time.monotonic() < deadline:
            time.sleep(0.2)
    return said


def _value(manifest: Manifest, column: PrinterColumn) -> Any:
    value: Any = manifest
    for part in column.json_path.strip(".").split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def age(moment: str, now: datetime) -> str:
    """kubectl's short form (apimachinery's HumanDuration): 42s, 3m12s, 65m, 5h30m, 3d4h, 2y70d."""
    seconds = int((now - datetime.fromisoformat(moment.replace("Z", "+00:00"))).total_seconds())
    if seconds < -1:
        return "<invalid>"
    minutes, hours = seconds // 60, seconds // 3600
    days, years = hours // 24, hours // (24 * 365)
    steps = [
        (seconds < 120, f"{max(seconds, 0)}s"),
        (minutes < 10, _units(minutes, "m", seconds % 60, "s")),
        (minutes < 3 * 60, f"{minutes}m"),
        (hours < 8, _units(hours, "h", minutes % 60, "m")),
        (hours < 48, f"{hours}h"),
        (hours < 8 * 24, _units(days, "d", hours % 24, "h")),
        (hours < 2 * 365 * 24, f"{days}d"),
        (hours < 8 * 365 * 24, _units(years, "y", days % 365, "d")),
    ]
    return next((text for due, text in steps if due), f"{years}y")


def _units(whole: int, unit: str, rest: int, smaller: str) -> str:
    return f"{whole}{unit}{rest}{smaller}" if rest else f"{whole}{unit}"


def cell(value: Any, column: PrinterColumn, now: datetime) -> str:
    if value is None:
        return "<none>" if column.type != "date" else ""
    if column.type == "date":
        return age(str(value), now)
    if column.type == "boolean":
        return "true" if value else "false"
    if column.type == "number" and isinstance(value, float):
        return go_number(value)
    return str(value)


def go_number(value: float) -> str:
    """A JSON number as kubectl prints it: a whole one as an integer (the API machinery decodes it as one),
    any other as Go's %v does, its shortest digits, with an exponent from 1e-5 down and 1e6 up."""
    if not math.isfinite(value):
        return {math.inf: "+Inf", -math.inf: "-Inf"}.get(value, "NaN")
    if value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    digits = repr(value).lstrip("-")
    sign = "-" if value < 0 else ""
    mantissa = Decimal(digits).normalize()
    exponent = mantissa.adjusted()
    if -4 <= exponent < 6:
        return sign + format(mantissa, "f")
    coefficient = str(mantissa.scaleb(-exponent))
    return f"{sign}{coefficient}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def rows(state: State, kind: AnyKind, now: datetime | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and the rows `kubectl get` prints for `kind` (priority-0 printer columns)."""
    now = now or datetime.now(UTC)
    columns = [c for c in kind.columns if c.priority == 0]
    header = ["NAME", *(c.name.upper() for c in columns)]
    body = [[m["metadata"]["name"], *(cell(_value(m, c), c, now) for c in columns)] for m in state.objects(kind)]
    return header, body


def table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]
    )


def get(state: State, kind_name: str | None = None) -> str:
    kinds = [kind_named(kind_name)] if kind_name else list(KINDS)
    parts = []
    for kind in kinds:
        header, body = rows(state, kind)
        if body or kind_name:
            parts.append(table(header, body) if body else f"No {kind.plural} found in {state.root}.")
    return "\n\n".join(parts) or f"No resources found in {state.root}."
