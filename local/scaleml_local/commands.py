"""`scaleml local apply|get|delete`: the objects of a state directory, shown with kubectl's columns."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
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
    """kubectl's short form: 42s, 3m12s, 2h5m, 3d."""
    seconds = int((now - datetime.fromisoformat(moment.replace("Z", "+00:00"))).total_seconds())
    if seconds < 120:
        return f"{max(seconds, 0)}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 3 * 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60}m" if seconds >= 3600 else f"{seconds // 60}m"
    return f"{seconds // 3600}h" if seconds < 2 * 86400 else f"{seconds // 86400}d"


def cell(value: Any, column: PrinterColumn, now: datetime) -> str:
    if value is None:
        return "<none>" if column.type != "date" else ""
    if column.type == "date":
        return age(str(value), now)
    if column.type == "boolean":
        return "true" if value else "false"
    if column.type == "number" and isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
