"""What the demo shows: a live table of the objects and the traffic while it runs, and a summary at the end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scaleml_api.v1alpha1 import KINDS, TRAINING_JOB
from scaleml_local import commands
from scaleml_local.demo.traffic import Traffic
from scaleml_local.state import State

if TYPE_CHECKING:
    from scaleml_local.demo.scenario import Result


class View:
    """A progress bar per TrainingJob, the objects with `kubectl get`'s columns, and the traffic's counts."""

    def __init__(self, state: State, console: Console, *, live: bool) -> None:
        self.state, self.console = state, console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            console=console,
        )
        self.live = Live(self._render(None, False), console=console, refresh_per_second=4, transient=not live)

    def _render(self, traffic: Traffic | None, shifted: bool) -> Group:
        tables: list[Any] = [self.progress]
        for kind in KINDS:
            header, body = commands.rows(self.state, kind)
            if not body:
                continue
            table = Table(*header, title=kind.kind, title_justify="left", box=None, padding=(0, 1))
            for row in body:
                table.add_row(*row)
            tables.append(table)
        if traffic is not None:
            versions = ", ".join(f"v{v}: {n}" for v, n in sorted(traffic.by_version.items()))
            mood = "shifted" if shifted else "calm"
            tables.append(f"traffic ({mood}): {traffic.served} requests served ({versions}), {traffic.failed} failed")
        return Group(*tables)

    def say(self, message: str) -> None:
        self.console.print(f"[bold]•[/] {message}")

    def update(self, traffic: Traffic | None, shifted: bool) -> None:
        """Moves each TrainingJob's progress bar to its status, and redraws."""
        for job in self.state.objects(TRAINING_JOB):
            progress = job["status"].get("progress") or {}
            name = job["metadata"]["name"]
            task = next((t for t in self.progress.tasks if t.description == f"training {name}"), None)
            if task is None and job["status"].get("phase") == "Running":
                self.progress.add_task(f"training {name}", total=None)
            elif task is not None and progress.get("totalSteps"):
                self.progress.update(task.id, total=progress["totalSteps"], completed=progress.get("step") or 0)
        self.live.update(self._render(traffic, shifted))

    def close(self) -> None:
        if not self.console.is_terminal:
            # Outside a terminal the live view's last frame ends without a newline.
            self.console.print()


def summary(result: Result, state: State) -> Table:
    table = Table(title="ScaleML demo", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    # Paths are folded, never cut: they are meant to be copied.
    table.add_column(overflow="fold")
    for version, accuracy in sorted(result.accuracy.items()):
        answers = [
            f"{score.accuracy:.3f} on {'shifted' if score.shifted else 'calm'} traffic ({score.rows} rows)"
            for score in result.scores
            if score.version == version
        ]
        table.add_row(
            f"version {version} accuracy",
            "; ".join([f"{accuracy:.3f} on its validation rows", *answers]),
        )
    for estimate in result.estimates:
        table.add_row(
            f"version {estimate.version} estimated",
            f"{estimate.estimated:.3f} on {'shifted' if estimate.shifted else 'calm'} traffic (mean of "
            f"{estimate.windows} windows, no labels) vs {estimate.true:.3f} true: error {estimate.error:.3f}"
            + ("; the traffic drifted, where the model can be confidently wrong" if estimate.drifted else ""),
        )
    for version, groups in sorted(result.groups.items()):
        table.add_row(f"version {version} per clinic", groups)
    for version, verdict in sorted(result.gates.items()):
        table.add_row(f"version {version} gates", verdict)
    versions = ", ".join(f"v{v}: {n}" for v, n in sorted(result.by_version.items()))
    table.add_row("requests", f"{result.served} served ({versions}), {result.failed} failed")
    calm = [w for w in result.windows if not w.shifted]
    drifted = [w for w in result.windows if w.shifted and w.drift]
    after = [w for w in result.windows if w.reference == result.new_version]
    scores = [("before the shift", calm), ("after the shift", drifted), ("after retraining", after)]
    table.add_row("drift score", ", ".join(f"{label} {ws[-1].score:.3f}" for label, ws in scores if ws))
    table.add_row(
        "drift caught", f"in window {result.drift_after_windows} after the shift; retrained by {result.retrain_job}"
    )
    if result.held_back:
        table.add_row("held back", f"version {result.new_version} failed the gates; the first version stays served")
    table.add_row("stages", ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.stages.items()))
    table.add_row("drift report", str(result.report))
    table.add_row("state", f"{state.root} (scaleml local get --state {state.root})")
    return table
