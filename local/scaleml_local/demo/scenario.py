"""The demo's story: apply the YAML, train, serve, send calm traffic, shift it, catch the drift, retrain, roll.

It trains a classifier on scikit-learn's breast cancer data (it ships inside the package: nothing
is downloaded), serves it with Triton capturing every request, and sends traffic with tritonclient:
rows of the data set, resampled, with a little noise. Then the traffic shifts (a new scanner
measures the size features 40% larger) and a newly labelled training set of shifted rows arrives;
the drift monitor catches the shift, its retraining policy creates a TrainingJob, and the
deployment serves the new version in place. Every answer is scored against the row's true diagnosis,
so the summary shows what the loop is for: the old version's accuracy falling on the shifted
traffic and the retrained one's restoring it. Every stage is checked, and any failure ends the demo
with a non-zero exit code. The YAML ships inside the package (manifests/, beside this module).
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import FrameType
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from rich.console import Console

from scaleml_api.card import ModelCard
from scaleml_api.conditions import READY
from scaleml_api.merge import merge_patch
from scaleml_api.profile import DataProfile
from scaleml_api.repository import MODEL_CARD_FILE, PROFILE_FILE
from scaleml_api.v1alpha1 import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.modeldeployment import PROMOTED, Gates
from scaleml_api.v1alpha1.trainingjob import FAILED
from scaleml_local.demo.traffic import TARGET, Score, Traffic, pool
from scaleml_local.demo.view import View, summary
from scaleml_local.runs import reports_dir
from scaleml_local.state import LocalError, Manifest, State, read_manifests
from scaleml_local.supervisor import Supervisor, stop_orphans
from scaleml_operator.status.conditions import find_condition
from scaleml_operator.status.promotion import evaluation_of, judge

# The demo's TrainingJob, ModelDeployment and DriftMonitor: package data, in a wheel as in a checkout.
MANIFESTS: Final = resources.files("scaleml_local.demo") / "manifests"
NAME: Final = "cancer"
# The features a new scanner measures larger: 20 of 30.
SHIFTED_PREFIXES: Final = ("mean_", "worst_")
SHIFT_FACTOR: Final = 1.4
POLL_SECONDS: Final = 0.25
# The synthetic sensitive column (see `dataset`).
CLINIC: Final = "clinic"
CLINIC_SEED: Final = 20261205
Scenario = Literal["retrain", "bad-retrain"]
SCENARIOS: Final[tuple[Scenario, ...]] = ("retrain", "bad-retrain")
# What the bad-retrain scenario does to the retraining job: a learning rate that barely moves the
# weights, for one epoch. Its version fails the ModelDeployment's gates and stays out of production.
BAD_RETRAIN: Final = {"hyperparameters": {"epochs": 1, "learningRate": 1e-6}}


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
    scenario: Scenario = "retrain"


@dataclass(frozen=True)
class Window:
    checked: str
    drift: bool
    score: float
    reference: int | None
    shifted: bool
    # The monitor's estimate of the window's accuracy, without labels (None: it has none).
    estimated_accuracy: float | None = None


@dataclass(frozen=True)
class Estimate:
    """A version's accuracy on calm or shifted traffic as the monitor estimated it, next to the true one."""

    version: int
    shifted: bool
    estimated: float  # mean over the windows of that traffic tested against the version
    windows: int
    true: float  # of every answer the version gave to that traffic, scored against the row's label
    rows: int
    # Any of the windows drifted: the model's confidence need not mean accuracy there.
    drifted: bool = False

    @property
    def error(self) -> float:
        return abs(self.estimated - self.true)


def estimates(windows: Sequence[Window], scores: Sequence[Score]) -> list[Estimate]:
    """Per version and traffic that has both: the mean estimate of its windows and the true accuracy."""
    found = []
    for score in scores:
        chosen = [
            window
            for window in windows
            if window.reference == score.version
            and window.shifted == score.shifted
            and window.estimated_accuracy is not None
        ]
        if chosen:
            mean = float(np.mean([window.estimated_accuracy or 0.0 for window in chosen]))
            drifted = any(window.drift for window in chosen)
            found.append(Estimate(score.version, score.shifted, mean, len(chosen), score.accuracy, score.rows, drifted))
    return found


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
    estimates: list[Estimate] = field(default_factory=list)
    # Per version: what the ModelDeployment's gates say of it, and its metric per clinic.
    gates: dict[int, str] = field(default_factory=dict)
    groups: dict[int, str] = field(default_factory=dict)
    held_back: bool = False


def dataset(shifted: bool = False) -> pa.Table:
    """scikit-learn's breast cancer data with snake_case columns, the diagnosis as a label, and a clinic.

    The data set records no patient attribute to audit, so the demo adds one and says so: `clinic`
    is synthetic, each row drawn at random (seeded, two rows in three "north"), independent of
    everything else. It is a sensitive feature of the TrainingJob, audited and never fed to the model.
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    columns: dict[str, Any] = {}
    for index, name in enumerate(data.feature_names):
        column = str(name).replace(" ", "_")
        values = data.data[:, index]
        columns[column] = values * SHIFT_FACTOR if shifted and column.startswith(SHIFTED_PREFIXES) else values
    columns[TARGET] = np.asarray(data.target_names)[data.target]
    draws = np.random.default_rng(CLINIC_SEED).random(len(data.target))
    columns[CLINIC] = np.where(draws < 2 / 3, "north", "south")
    return pa.table(columns)


class Demo:
    def __init__(self, state: State, manifests: Traversable, settings: Settings, console: Console) -> None:
        self.state, self.manifests, self.settings = state, manifests, settings
        self.result = Result()
        self.traffic: Traffic | None = None
        self.shifted = False
        self.view = View(state, console, live=settings.live)

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
                status.get("estimatedAccuracy"),
            )
            self.result.windows.append(window)
            estimated = window.estimated_accuracy
            self.view.say(
                f"window at {checked}: score {window.score:.3f}, {'[red]drift[/]' if window.drift else 'no drift'}"
                f", estimated accuracy {'n/a' if estimated is None else f'{estimated:.3f}'}"
                f" (reference v{window.reference}, traffic {'shifted' if window.shifted else 'calm'})"
            )
        self.view.update(self.traffic, self.shifted)

    # Stages.

    def apply(self) -> None:
        retrain = {"trainingJobOverrides": BAD_RETRAIN} if self.settings.scenario == "bad-retrain" else None
        overrides: dict[str, Manifest] = {
            TRAINING_JOB.kind: {"spec": {"hyperparameters": {"epochs": self.settings.epochs}}},
            DRIFT_MONITOR.kind: {
                "spec": {
                    "window": {"size": self.settings.window_size, "every": self.settings.every},
                    "retrain": retrain,
                }
            },
        }
        for document in read_manifests([self.manifests]):
            # A None leaves the YAML's value: merge_patch would remove the field.
            change = json.loads(json.dumps(overrides.get(document["kind"], {})), object_hook=_without_none)
            self.view.say(self.state.apply(merge_patch(document, change)))

    def _job(self, name: str) -> Manifest:
        job = self.state.get(TRAINING_JOB, name)
        if job is None:
            raise DemoError(f"TrainingJob {name} is gone")
        if job["status"].get("phase") == "Failed":
            raise DemoError(f"TrainingJob {name} failed: {_message(job, FAILED)}")
        return job

    def train(self, name: str) -> int:
        self.wait(f"TrainingJob {name} to succeed", lambda: self._job(name)["status"].get("phase") == "Succeeded")
        job = self._job(name)
        version = int(job["status"]["modelVersion"])
        card = ModelCard.model_validate_json(
            (self.state.volume("models") / NAME / str(version) / MODEL_CARD_FILE).read_text()
        )
        accuracy = card.training.metrics.validation_metric
        if accuracy is None:
            raise DemoError(f"version {version} has no validation accuracy: the demo's YAML sets validationSplit")
        self.result.accuracy[version] = accuracy
        self.result.groups[version] = per_group(card)
        self.result.gates[version] = self._gates(job, version)
        self.view.say(f"TrainingJob {name} exported version {version} (validation accuracy {accuracy:.3f})")
        return version

    def _gates(self, job: Manifest, version: int) -> str:
        """What the ModelDeployment's gates say of `version`, against the version served when it was exported."""
        deployment = self.state.get(MODEL_DEPLOYMENT, NAME)
        gates = ((deployment or {}).get("spec") or {}).get("promotion", {}).get("gates")
        if gates is None:
            return "no gates"
        served = self.served()
        verdict = judge(Gates.model_validate(gates), evaluation_of(job["status"].get("evaluation")), served)
        return verdict.message(version)

    def served(self) -> int | None:
        deployment = self.state.get(MODEL_DEPLOYMENT, NAME)
        if deployment is not None and deployment["status"].get("phase") == "Failed":
            raise DemoError(f"ModelDeployment {NAME} failed: {_message(deployment, READY)}")
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
        with self.view.live:
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
                self.view.say(f"serving version {first}; traffic to Triton at {endpoint}, every request captured")
                self.traffic = Traffic(
                    endpoint,
                    NAME,
                    self.state.volume("models") / NAME,
                    profile,
                    pool(profile, dataset(), shifted=False),
                    rows_per_request=self.settings.rows_per_request,
                    requests_per_second=self.settings.requests_per_second,
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
                self.view.say(
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
                self.view.say(f"the monitor's retraining policy created TrainingJob {self.result.retrain_job}")
                self.result.new_version = self.train(self.result.retrain_job)
            if self.settings.scenario == "bad-retrain":
                with self.stage("held back"):
                    self.hold(first)
            else:
                with self.stage("rollout"):
                    self.roll()
            self.traffic.stop.set()
            self.traffic.join()
            self._observe()
        self.result.served, self.result.failed = self.traffic.served, self.traffic.failed
        self.result.by_version = dict(self.traffic.by_version)
        self.result.scores = self.traffic.scores()
        self.result.estimates = estimates(self.result.windows, self.result.scores)
        self.result.report = reports_dir(self.state, NAME) / "latest.html"
        if self.result.failed:
            raise DemoError(f"{self.result.failed} request(s) failed: {self.traffic.last_error}")
        return self.result

    def hold(self, first: int) -> None:
        """The retrained version fails the gates: the first stays served, and the status says why."""
        new = self.result.new_version

        def held() -> bool:
            status = (self.state.get(MODEL_DEPLOYMENT, NAME) or {}).get("status") or {}
            return status.get("candidateVersion") == new and status.get("servedVersion") == first

        self.wait(f"ModelDeployment {NAME} to hold version {new} back", held)
        deployment = self.state.get(MODEL_DEPLOYMENT, NAME)
        assert deployment is not None
        self.result.held_back = True
        self.view.say(f"[yellow]version {new} held back[/]: {_message(deployment, PROMOTED)}")
        self.windows(self.settings.windows_after, lambda w: w.reference == first)
        if self.traffic is not None and self.traffic.by_version[str(new)]:
            raise DemoError(f"version {new} answered requests although the gates held it back")

    def roll(self) -> None:
        """The retrained version passes the gates and is served in place."""
        new = self.result.new_version
        self.wait(f"ModelDeployment {NAME} to serve version {new}", lambda: self.served() == new)
        self.view.say(f"ModelDeployment {NAME} serves version {new}, with no restart")
        self.windows(self.settings.windows_after, lambda w: w.reference == new)
        self.wait(
            f"requests answered by version {new}",
            lambda: self.traffic is not None and self.traffic.by_version[str(new)] > 0,
        )

    def _retrain_job(self) -> str:
        return str(self.state.status(DRIFT_MONITOR, NAME).get("lastRetrainJob") or "")

    def close(self) -> None:
        if self.traffic is not None:
            self.traffic.stop.set()
            self.traffic.join(timeout=10)
        self.view.close()


def per_group(card: ModelCard) -> str:
    """A version's accuracy per clinic on its validation rows, with the interval and the parity difference."""
    evaluation = card.evaluation
    if evaluation is None or not evaluation.fairness:
        return "not audited"
    audit = evaluation.fairness[0]
    groups = []
    for group in audit.groups:
        interval = group.intervals.get("accuracy")
        spread = f" [{interval.low:.2f}, {interval.high:.2f}]" if interval else ""
        groups.append(f"{group.group} {group.metrics.get('accuracy') or 0:.3f}{spread} ({group.rows} rows)")
    parity = audit.demographic_parity_difference
    return f"{', '.join(groups)}; parity difference {'n/a' if parity is None else f'{parity:.3f}'}"


def _without_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def _message(manifest: Manifest, condition: str) -> str:
    """The message of one of the object's conditions: where the status says what went wrong."""
    return str((find_condition(manifest["status"].get("conditions") or (), condition) or {}).get("message", ""))


def run(
    state: State, manifests: Traversable = MANIFESTS, settings: Settings | None = None, console: Console | None = None
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


def main(state_dir: Path, manifests: Path | None = None, scenario: Scenario = "retrain") -> int:
    console = Console()

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGTERM stops the demo as Ctrl-C does: the finally clauses stop every process.
    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    state = State(state_dir)
    try:
        result = run(state, manifests or MANIFESTS, Settings(scenario=scenario), console=console)
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
