"""`scaleml demo`: the whole loop on this machine, from the YAML in manifests/examples/local/.

It trains a classifier on scikit-learn's breast cancer data (it ships inside the package: nothing
is downloaded), serves it with Triton behind the capture proxy, and sends traffic with tritonclient:
rows of the data set, resampled, with a little noise. Then the traffic shifts (a new scanner
measures the size features 40% larger) and a newly labelled training set of shifted rows arrives;
the drift monitor catches the shift, its retraining policy creates a TrainingJob, and the
deployment serves the new version in place. Every answer is scored against the row's true diagnosis,
so the summary shows what the loop is for: the old version's accuracy falling on the shifted
traffic and the retrained one's restoring it. Every stage is checked, and any failure ends the demo
with a non-zero exit code.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import tritonclient.grpc as grpcclient
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scaleml_api.card import ModelCard
from scaleml_api.merge import merge_patch
from scaleml_api.profile import DataProfile
from scaleml_api.repository import MODEL_CARD_FILE, PROFILE_FILE
from scaleml_api.v1alpha1 import DRIFT_MONITOR, KINDS, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_local import commands
from scaleml_local.runs import reports_dir
from scaleml_local.state import LocalError, Manifest, State, read_manifests
from scaleml_local.supervisor import Supervisor, stop_orphans

MANIFESTS: Final = Path(__file__).resolve().parents[3] / "manifests" / "examples" / "local"
NAME: Final = "cancer"
TARGET: Final = "diagnosis"
# The features a new scanner measures larger: 20 of 30, well above the monitor's shareOfDriftedFeatures.
SHIFTED_PREFIXES: Final = ("mean_", "worst_")
SHIFT_FACTOR: Final = 1.4
# Noise added to resampled rows, as a fraction of each feature's spread: live rows are never exact copies.
NOISE: Final = 0.05
POLL_SECONDS: Final = 0.25


class DemoError(Exception):
    """A stage failed; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    """Sizes and timings; None keeps what the YAML says."""

    epochs: int | None = None
    window_size: int | None = None
    every: str | None = None
    rows_per_request: int = 8
    requests_per_second: float = 20.0
    # Windows tested before the shift (none may drift), and after which the shift must be caught.
    calm_windows: int = 2
    drift_within: int = 2
    # Windows tested on the retrained version before the end.
    windows_after: int = 1
    stage_timeout: float = 180.0
    live: bool = True


@dataclass(frozen=True)
class Window:
    checked: str
    drift: bool
    score: float
    reference: int | None
    shifted: bool


@dataclass(frozen=True)
class Pool:
    """The rows clients draw requests from: the model's inputs and each row's true label."""

    inputs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.str_]
    shifted: bool


@dataclass(frozen=True)
class Score:
    """How many rows a version answered on calm or shifted traffic, and how many of them rightly."""

    version: int
    shifted: bool
    rows: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows


@dataclass
class Result:
    accuracy: dict[int, float] = field(default_factory=dict)
    scores: list[Score] = field(default_factory=list)
    served: int = 0
    failed: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    drift_after_windows: int = 0
    retrain_job: str = ""
    new_version: int = 0
    report: Path | None = None
    stages: dict[str, float] = field(default_factory=dict)


def dataset(shifted: bool = False) -> pa.Table:
    """scikit-learn's breast cancer data with snake_case columns and the diagnosis as a label."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    columns: dict[str, Any] = {}
    for index, name in enumerate(data.feature_names):
        column = str(name).replace(" ", "_")
        values = data.data[:, index]
        columns[column] = values * SHIFT_FACTOR if shifted and column.startswith(SHIFTED_PREFIXES) else values
    columns[TARGET] = np.asarray(data.target_names)[data.target]
    return pa.table(columns)


def pool(profile: DataProfile, table: pa.Table, *, shifted: bool) -> Pool:
    """The rows of `table` as the model takes them (each feature where the profile says it goes), with their labels."""
    inputs = np.zeros((table.num_rows, *profile.input.dims), dtype=np.float32)
    for feature in profile.features:
        inputs[:, feature.index] = table.column(feature.name).to_numpy()
    return Pool(inputs, np.asarray(table.column(TARGET).to_pylist(), dtype=np.str_), shifted)


class Traffic(threading.Thread):
    """Clients calling the capture proxy over gRPC at a steady rate.

    Counts answers by version, failures, and right answers by version and traffic.
    """

    def __init__(self, endpoint: str, models: Path, profile: DataProfile, pool: Pool, settings: Settings) -> None:
        super().__init__(name="traffic", daemon=True)
        self.endpoint, self.models, self.profile, self.settings = endpoint, models, profile, settings
        # Swapped whole by the demo when the traffic shifts: a request never mixes two pools.
        self.pool = pool
        self.stop = threading.Event()
        self.served = self.failed = self.unscored = 0
        self.by_version: Counter[str] = Counter()
        self.rows: Counter[tuple[int, bool]] = Counter()
        self.correct: Counter[tuple[int, bool]] = Counter()
        self.last_error = ""
        self.rng = np.random.default_rng(11)
        self._cards: dict[int, ModelCard] = {}

    def _card(self, version: int) -> ModelCard:
        """The card of the version that answered: its labels decode the output (each version has its own)."""
        if version not in self._cards:
            path = self.models / str(version) / MODEL_CARD_FILE
            self._cards[version] = ModelCard.model_validate_json(path.read_text())
        return self._cards[version]

    def _score(self, version: int, pool: Pool, picks: npt.NDArray[np.int64], result: Any) -> None:
        card = self._card(version)
        logits = result.as_numpy(card.outputs[0].name)
        predicted = np.asarray([str(label) for label in card.labels], dtype=np.str_)[logits.argmax(axis=1)]
        self.rows[version, pool.shifted] += len(picks)
        self.correct[version, pool.shifted] += int((predicted == pool.labels[picks]).sum())

    def scores(self) -> list[Score]:
        return [Score(v, shifted, rows, self.correct[v, shifted]) for (v, shifted), rows in sorted(self.rows.items())]

    def run(self) -> None:
        client = grpcclient.InferenceServerClient(self.endpoint)
        interval = 1.0 / self.settings.requests_per_second
        name = self.profile.input.name
        while not self.stop.is_set():
            started = time.monotonic()
            pool = self.pool
            picks = self.rng.integers(len(pool.inputs), size=self.settings.rows_per_request)
            rows = pool.inputs[picks]
            batch = (rows + self.rng.normal(0, NOISE, rows.shape) * pool.inputs.std(axis=0)).astype(np.float32)
            tensor = grpcclient.InferInput(name, list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            try:
                result = client.infer(NAME, [tensor])
                version = result.get_response(as_json=True)["model_version"]
                self.by_version[str(version)] += 1
                self.served += 1
            except Exception as error:
                # Every failure counts: the demo promises none across the rollout.
                self.failed += 1
                self.last_error = str(error)
            else:
                try:
                    self._score(int(version), pool, picks, result)
                except Exception as error:
                    # The request succeeded; a broken score must not stop the traffic, but it ends the demo.
                    self.unscored += 1
                    self.last_error = f"scoring an answer of version {version}: {error!r}"
            self.stop.wait(max(0.0, interval - (time.monotonic() - started)))
        client.close()


class Demo:
    def __init__(self, state: State, manifests: Path, settings: Settings, console: Console) -> None:
        self.state, self.manifests, self.settings, self.console = state, manifests, settings, console
        self.result = Result()
        self.traffic: Traffic | None = None
        self.shifted = False
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            console=console,
        )
        self.live = Live(self._view(), console=console, refresh_per_second=4, transient=not settings.live)

    # Display.

    def _view(self) -> Group:
        tables: list[Any] = [self.progress]
        for kind in KINDS:
            header, body = commands.rows(self.state, kind)
            if not body:
                continue
            table = Table(*header, title=kind.kind, title_justify="left", box=None, padding=(0, 1))
            for row in body:
                table.add_row(*row)
            tables.append(table)
        if self.traffic is not None:
            versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.traffic.by_version.items()))
            mood = "shifted" if self.shifted else "calm"
            tables.append(
                f"traffic ({mood}): {self.traffic.served} requests served ({versions}), {self.traffic.failed} failed"
            )
        return Group(*tables)

    def _say(self, message: str) -> None:
        self.console.print(f"[bold]•[/] {message}")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        self.result.stages[name] = time.monotonic() - started

    def wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.settings.stage_timeout
        while not ready():
            self._observe()
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {self.settings.stage_timeout:.0f} s waiting for {what}")
            if self.traffic is not None and self.traffic.failed:
                raise DemoError(f"{self.traffic.failed} request(s) failed: {self.traffic.last_error}")
            if self.traffic is not None and self.traffic.unscored:
                raise DemoError(f"{self.traffic.unscored} answer(s) could not be scored: {self.traffic.last_error}")
            time.sleep(POLL_SECONDS)
        self._observe()

    def _observe(self) -> None:
        status = self.state.status(DRIFT_MONITOR, NAME)
        checked = status.get("lastCheckTime")
        if checked and (not self.result.windows or self.result.windows[-1].checked != checked):
            window = Window(
                checked,
                bool(status.get("driftDetected")),
                float(status.get("driftScore") or 0.0),
                status.get("referenceVersion"),
                self.shifted,
            )
            self.result.windows.append(window)
            self._say(
                f"window at {checked}: score {window.score:.3f}, {'[red]drift[/]' if window.drift else 'no drift'}"
                f" (reference v{window.reference}, traffic {'shifted' if window.shifted else 'calm'})"
            )
        for kind in (TRAINING_JOB,):
            for job in self.state.objects(kind):
                progress = job["status"].get("progress") or {}
                name = job["metadata"]["name"]
                task = next((t for t in self.progress.tasks if t.description == f"training {name}"), None)
                if task is None and job["status"].get("phase") == "Running":
                    self.progress.add_task(f"training {name}", total=None)
                elif task is not None and progress.get("totalSteps"):
                    self.progress.update(task.id, total=progress["totalSteps"], completed=progress.get("step") or 0)
        self.live.update(self._view())

    # Stages.

    def apply(self) -> None:
        overrides: dict[str, Manifest] = {
            TRAINING_JOB.kind: {"spec": {"hyperparameters": {"epochs": self.settings.epochs}}},
            DRIFT_MONITOR.kind: {"spec": {"window": {"size": self.settings.window_size, "every": self.settings.every}}},
        }
        for document in read_manifests([self.manifests]):
            # A None leaves the YAML's value: merge_patch would remove the field.
            change = json.loads(json.dumps(overrides.get(document["kind"], {})), object_hook=_without_none)
            self._say(self.state.apply(merge_patch(document, change)))

    def _job(self, name: str) -> Manifest:
        job = self.state.get(TRAINING_JOB, name)
        if job is None:
            raise DemoError(f"TrainingJob {name} is gone")
        if job["status"].get("phase") == "Failed":
            raise DemoError(f"TrainingJob {name} failed: {job['status'].get('message')}")
        return job

    def train(self, name: str) -> int:
        self.wait(f"TrainingJob {name} to succeed", lambda: self._job(name)["status"].get("phase") == "Succeeded")
        job = self._job(name)
        version = int(job["status"]["modelVersion"])
        card = self.state.volume("models") / NAME / str(version) / MODEL_CARD_FILE
        accuracy = ModelCard.model_validate_json(card.read_text()).training.metrics.validation_metric
        if accuracy is None:
            raise DemoError(f"version {version} has no validation accuracy: the demo's YAML sets validationSplit")
        self.result.accuracy[version] = accuracy
        self._say(f"TrainingJob {name} exported version {version} (validation accuracy {accuracy:.3f})")
        return version

    def served(self) -> int | None:
        deployment = self.state.get(MODEL_DEPLOYMENT, NAME)
        if deployment is not None and deployment["status"].get("phase") == "Failed":
            raise DemoError(f"ModelDeployment {NAME} failed: {deployment['status'].get('message')}")
        version = (deployment or {}).get("status", {}).get("servedVersion")
        return int(version) if version is not None else None

    def windows(self, count: int, accept: Callable[[Window], bool]) -> list[Window]:
        """Waits for `count` more windows that `accept`; returns them."""
        start = len(self.result.windows)
        chosen: list[Window] = []

        def enough() -> bool:
            chosen[:] = [w for w in self.result.windows[start:] if accept(w)]
            return len(chosen) >= count

        self.wait(f"{count} window(s) of the drift monitor", enough)
        return chosen

    def run(self) -> Result:
        with self.live:
            with self.stage("train"):
                self.apply()
                first = self.train(NAME)
            with self.stage("serve"):
                self.wait(f"ModelDeployment {NAME} to serve version {first}", lambda: self.served() == first)
                deployment = self.state.get(MODEL_DEPLOYMENT, NAME)
                assert deployment is not None
                endpoint = deployment["status"]["endpoints"]["grpc"]
                profile_path = self.state.volume("models") / NAME / str(first) / PROFILE_FILE
                profile = DataProfile.model_validate_json(profile_path.read_text())
                self._say(f"serving version {first}; traffic through the capture proxy at {endpoint}")
                models = self.state.volume("models") / NAME
                self.traffic = Traffic(
                    endpoint, models, profile, pool(profile, dataset(), shifted=False), self.settings
                )
                self.traffic.start()
            with self.stage("calm"):
                calm = self.windows(self.settings.calm_windows, lambda w: w.reference == first)
                if any(w.drift for w in calm):
                    raise DemoError("the monitor saw drift before the traffic shifted")
            with self.stage("detect"):
                shifted = dataset(shifted=True)
                pq.write_table(shifted, self.state.volume("datasets") / NAME / "train.parquet")
                self.traffic.pool = pool(profile, shifted, shifted=True)
                self.shifted = True
                self._say(
                    f"[yellow]traffic shifts[/]: {', '.join(SHIFTED_PREFIXES)}* features x{SHIFT_FACTOR}; "
                    "a newly labelled training set of shifted rows replaces datasets/cancer/train.parquet"
                )
                after = self.windows(1, lambda w: w.shifted and w.drift)
                tested = [w for w in self.result.windows if w.shifted]
                self.result.drift_after_windows = tested.index(after[0]) + 1
                if self.result.drift_after_windows > self.settings.drift_within:
                    raise DemoError(
                        f"drift was caught after {self.result.drift_after_windows} windows, "
                        f"not within {self.settings.drift_within}"
                    )
            with self.stage("retrain"):
                self.wait("the monitor to create a retraining job", lambda: bool(self._retrain_job()))
                self.result.retrain_job = self._retrain_job()
                self._say(f"the monitor's retraining policy created TrainingJob {self.result.retrain_job}")
                self.result.new_version = self.train(self.result.retrain_job)
            with self.stage("rollout"):
                new = self.result.new_version
                self.wait(f"ModelDeployment {NAME} to serve version {new}", lambda: self.served() == new)
                self._say(f"ModelDeployment {NAME} serves version {new}, with no restart")
                self.windows(self.settings.windows_after, lambda w: w.reference == new)
                self.wait(
                    f"requests answered by version {new}",
                    lambda: self.traffic is not None and self.traffic.by_version[str(new)] > 0,
                )
            self.traffic.stop.set()
            self.traffic.join()
            self._observe()
        self.result.served, self.result.failed = self.traffic.served, self.traffic.failed
        self.result.by_version = dict(self.traffic.by_version)
        self.result.scores = self.traffic.scores()
        self.result.report = reports_dir(self.state, NAME) / "latest.html"
        if self.result.failed:
            raise DemoError(f"{self.result.failed} request(s) failed: {self.traffic.last_error}")
        return self.result

    def _retrain_job(self) -> str:
        return str(self.state.status(DRIFT_MONITOR, NAME).get("lastRetrainJob") or "")

    def close(self) -> None:
        if self.traffic is not None:
            self.traffic.stop.set()
            self.traffic.join(timeout=10)
        if not self.console.is_terminal:
            # Outside a terminal the live view's last frame ends without a newline.
            self.console.print()


def _without_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


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
    table.add_row("stages", ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.stages.items()))
    table.add_row("drift report", str(result.report))
    table.add_row("state", f"{state.root} (scaleml local get --state {state.root})")
    return table


def run(
    state: State, manifests: Path = MANIFESTS, settings: Settings | None = None, console: Console | None = None
) -> Result:
    """Runs the demo in `state` (emptied first) with its own supervisor; every process stops before it returns."""
    settings = settings or Settings()
    console = console or Console()
    if state.supervisor_pid() is not None:
        raise LocalError(f"{state.root} is in use by a supervisor: `scaleml local delete --all --state {state.root}`")
    if state.root.exists():
        # A demo killed with SIGKILL left its servers running: stop them before their record goes.
        stop_orphans(state)
        shutil.rmtree(state.root)
    supervisor = Supervisor(state)
    supervisor.claim()
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), name="supervisor")
    thread.start()
    data = state.volume("datasets") / NAME
    data.mkdir(parents=True, exist_ok=True)
    pq.write_table(dataset(), data / "train.parquet")
    demo = Demo(state, manifests, settings, console)
    try:
        return demo.run()
    finally:
        demo.close()
        console.print("[bold]•[/] stopping every process")
        stop.set()
        thread.join()


def main(state_dir: Path, manifests: Path | None = None) -> int:
    console = Console()

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops the demo as Ctrl-C does: the finally clauses stop every process.
    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    state = State(state_dir)
    try:
        result = run(state, manifests or MANIFESTS, console=console)
    except KeyboardInterrupt:
        console.print("interrupted: every process stopped")
        return 130
    except (DemoError, LocalError) as error:
        console.print(f"[red]demo failed[/]: {error}")
        console.print(f"logs: {state.root / 'logs'}")
        return 1
    console.print(summary(result, state))
    console.print(f"finished in {time.monotonic() - started:.0f} s")
    return 0
