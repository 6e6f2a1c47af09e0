"""The supervisor of a state directory: what the operator and the kubelet do on a cluster, with local processes.

Every second it reads the applied objects and converges: a TrainingJob runs torchrun once; a
ModelDeployment runs the model agent, then Triton (tracing the sample to capture) and the capture
converter once a version is linked; a DriftMonitor runs the monitor on the served version's profile
(restarted when that version changes) and takes the operator's retraining step. Whatever the
operator decides without asking a cluster is decided here by the operator's own pure functions: the
verdict on a spec, where a ModelDeployment's model comes from, what a DriftMonitor reads, and when
and what to retrain. Each workload process leads a process group of its own, so stopping one stops
its children too (torchrun's workers, Triton's Python backend stubs); SIGTERM or SIGINT stops every
group.

    python -m scaleml_local.supervisor --state DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, Final, Literal, ParamSpec

from scaleml_api import runtime
from scaleml_api.conditions import Waiting
from scaleml_api.kind import AnyKind, Kind, SpecT
from scaleml_api.v1alpha1 import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.driftmonitor import RUN_FIELDS, DriftMonitorSpec
from scaleml_api.v1alpha1.modeldeployment import (
    GATE_FAILED,
    NO_READY_REPLICA,
    REPLICAS_READY,
    SERVER_CRASHING,
    ModelDeploymentSpec,
)
from scaleml_api.v1alpha1.pods import TORCHRUN_ENV
from scaleml_api.v1alpha1.trainingjob import FINISHED_PHASES
from scaleml_local import runs, status
from scaleml_local.state import LocalError, Manifest, State, running
from scaleml_operator.builders import driftmonitor, modeldeployment, retraining
from scaleml_operator.status import acceptance
from scaleml_operator.status.promotion import Promotion, promote_deployment
from scaleml_workloads.atomic import write_text_atomically
from scaleml_workloads.export.repository import versions
from scaleml_workloads.serving import tritonserver
from scaleml_workloads.signals import stop_on_signals

log = logging.getLogger("scaleml_local")

TICK_SECONDS: Final = 1.0
# Triton waits up to EXIT_TIMEOUT_SECONDS for requests in flight; then the group is killed.
STOP_SECONDS: Final = runtime.EXIT_TIMEOUT_SECONDS + 10
# Clears the runs of drifted and degraded windows of the previous reference (flag, length and start of
# each): the new version is judged by its own windows.
EPISODE_RESET: Final = {
    field: value for fields in RUN_FIELDS.values() for field, value in zip(fields, (False, 0, None), strict=True)
}

Arguments = ParamSpec("Arguments")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Group:
    """The processes of one object, and what they were started with."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    # A ModelDeployment's model directory; what a DriftMonitor reads as its reference (driftmonitor.reference).
    model: str = ""
    reference: str = ""
    # A ModelDeployment's agent config, which it reads again, and the version its Triton serves.
    config: Path | None = None
    served: int | None = None


def _key(kind: AnyKind, name: str) -> str:
    return f"{kind.plural}/{name}"


def exports(jobs: Mapping[str, Manifest], training_job: Manifest | None) -> dict[int, Manifest]:
    """The versions TrainingJobs report exporting into `training_job`'s model directory, and who exported each.

    What the operator's indexes of exported versions and their evaluations answer on a cluster (a
    retraining job writes the next version of the model it retrains).
    """
    if training_job is None:
        return {}
    output = training_job["spec"]["output"]
    return {
        job["status"]["modelVersion"]: job
        for job in jobs.values()
        if isinstance(job["status"].get("modelVersion"), int)
        and (job["spec"]["output"]["volumeClaim"], job["spec"]["output"]["modelName"])
        == (output["volumeClaim"], output["modelName"])
    }


def newest_exported(jobs: Mapping[str, Manifest], training_job: Manifest | None) -> int | None:
    """The newest version any TrainingJob reports exporting into `training_job`'s model directory."""
    return max(exports(jobs, training_job), default=None)


def gated(
    spec: ModelDeploymentSpec,
    deployment: Manifest,
    jobs: Mapping[str, Manifest],
    training_job: Manifest | None,
    served: int | None,
) -> Promotion | None:
    """What the promotion gates say of the newest version, as the operator's reconcile decides it.

    None for a pinned version or a missing TrainingJob, which are served (or waited for) as asked.
    """
    if isinstance(spec.model.version, int) or training_job is None:
        return None
    exported = exports(jobs, training_job)
    newest = max(exported, default=None)
    exporter = exported.get(newest) if newest is not None else None
    evaluation = (exporter or {}).get("status", {}).get("evaluation")
    return promote_deployment(deployment, spec.promotion.gates, newest, served, evaluation)


def served_version(http_port: int, model: str) -> int | None:
    """The newest version Triton has ready, from its repository index; None while none is."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/v2/repository/index", data=b'{"ready": true}', method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            index = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    ready = [int(m["version"]) for m in index if m.get("name") == model and m.get("state") == "READY"]
    return max(ready, default=None)


def stop_orphans(state: State) -> list[tuple[str, int]]:
    """Stops the workload processes that a supervisor of `state` recorded and that still run.

    A supervisor killed with SIGKILL leaves them behind. Each was started as the leader of its own
    session with the state directory in its command line; a pid reused since by anything else is
    left alone. Returns what was stopped, by object.
    """
    root = os.fsencode(state.root)
    found = []
    for key, entry in state.processes().items():
        for pid in entry.get("pids", []):
            try:
                leads_session = os.getsid(pid) == pid
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if running(pid) and leads_session and root in command:
                found.append((key, pid))
    # Every group at once, then one deadline for all, as the supervisor stops an object's processes.
    for _, pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while any(running(pid) for _, pid in found) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _, pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    state.write_processes({})
    return found


class Supervisor:
    def __init__(self, state: State) -> None:
        self.state = state
        self.groups: dict[str, Group] = {}
        # Objects whose processes failed: left alone until deleted, as a failed pod would be reported.
        self.failed: set[str] = set()

    # Life cycle.

    def claim(self) -> None:
        """Becomes the state directory's one supervisor, stopping what a killed predecessor left running."""
        if (pid := self.state.supervisor_pid()) is not None and pid != os.getpid():
            raise LocalError(f"{self.state.root} is supervised by process {pid} already")
        self.state.root.mkdir(parents=True, exist_ok=True)
        self.state.pid_file.write_text(str(os.getpid()))
        for key, pid in stop_orphans(self.state):
            log.warning("%s: stopped process %d, which had outlived its supervisor", key, pid)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.reconcile()
                except Exception:
                    # One bad object (a hand-edited file, a full disk) must not take the others down.
                    log.exception("reconciling %s failed", self.state.root)
                stop.wait(TICK_SECONDS)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for key in list(self.groups):
            self._stop(key)
        self.state.write_processes({})
        if self.state.pid_file.exists() and self.state.pid_file.read_text() == str(os.getpid()):
            self.state.pid_file.unlink()
        log.info("stopped every process")

    # Converging.

    def reconcile(self) -> None:
        jobs = {m["metadata"]["name"]: m for m in self.state.objects(TRAINING_JOB)}
        deployments = {m["metadata"]["name"]: m for m in self.state.objects(MODEL_DEPLOYMENT)}
        monitors = {m["metadata"]["name"]: m for m in self.state.objects(DRIFT_MONITOR)}
        present = {
            *(_key(TRAINING_JOB, n) for n in jobs),
            *(_key(MODEL_DEPLOYMENT, n) for n in deployments),
            *(_key(DRIFT_MONITOR, n) for n in monitors),
        }
        for key in set(self.groups) - present:
            self._stop(key)
            if key.startswith(MODEL_DEPLOYMENT.plural):
                shutil.rmtree(self.state.root / "serving" / key.split("/", 1)[1], ignore_errors=True)
        self.failed &= present
        for job in jobs.values():
            self._training(job)
        for deployment in deployments.values():
            self._serving(deployment, jobs)
        for monitor in monitors.values():
            self._monitoring(monitor, deployments, jobs)
        self.state.write_processes(
            {
                key: {"pids": [p.pid for p in group.processes.values()], "ports": group.ports}
                for key, group in self.groups.items()
            }
        )

    def _write(
        self,
        kind: AnyKind,
        name: str,
        compose: Callable[Concatenate[dict[str, Any], Arguments], Mapping[str, Any]],
        *args: Arguments.args,
        **kwargs: Arguments.kwargs,
    ) -> None:
        """Writes what `compose` makes of the object's status: only the fields that change, as the operator does."""
        current = self.state.status(kind, name)
        update = {key: value for key, value in compose(current, *args, **kwargs).items() if current.get(key) != value}
        if update:
            self.state.status_file(kind, name).patch(update)

    def _judge(self, kind: Kind[SpecT, Any], manifest: Manifest) -> SpecT | None:
        """The typed spec, None if invalid; the verdict goes into the status as on a cluster (Accepted)."""
        verdict = acceptance.judge(kind, manifest, datetime.now(UTC))
        self._write(kind, manifest["metadata"]["name"], verdict.over)
        return verdict.spec

    def _spawn(
        self, key: str, role: str, command: list[str], env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        path = self.log_path(key, role)
        with path.open("ab") as sink:
            process = subprocess.Popen(
                command,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("%s: started %s (pid %d, log %s)", key, role, process.pid, path)
        return process

    def log_path(self, key: str, role: str) -> Path:
        return self.state.directory("logs") / f"{key.replace('/', '-')}-{role}.log"

    def _stop(self, key: str) -> None:
        group = self.groups.pop(key, None)
        if group is None:
            return
        for process in group.processes.values():
            # The whole group: a leader that exited may leave children (torchrun's workers) behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for role, process in group.processes.items():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s: %s did not stop in %d s; killing it", key, role, STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.info("%s: stopped", key)

    def _died(self, key: str, group: Group) -> str | None:
        for role, process in group.processes.items():
            if process.poll() is not None:
                return f"{role} exited with code {process.returncode} (log: {self.log_path(key, role)})"
        return None

    def _training(self, job: Manifest) -> None:
        name = job["metadata"]["name"]
        key = _key(TRAINING_JOB, name)
        if (group := self.groups.get(key)) is not None:
            code = group.processes["trainer"].poll()
            if code is None:
                return
            self._stop(key)
            phase: Literal["Succeeded", "Failed"] = "Succeeded" if code == 0 else "Failed"
            if code == 0:
                message = f"Exported version {self.state.status(TRAINING_JOB, name).get('modelVersion')}."
            else:
                termination = self._termination_log(name)
                reason = termination.read_text().strip() if termination.exists() else ""
                message = f"torchrun exited with code {code}: {reason or 'see ' + str(self.log_path(key, 'trainer'))}"
            self._write(TRAINING_JOB, name, status.training, phase, message, now=datetime.now(UTC))
            log.info("%s: %s", key, message)
            return
        if job["status"].get("phase") in FINISHED_PHASES:
            return
        spec = self._judge(TRAINING_JOB, job)
        if spec is None:
            return
        if spec.run_policy.suspend:
            self._write(TRAINING_JOB, name, status.training, "Suspended", now=datetime.now(UTC))
            return
        run = runs.training_run(self.state, job, spec)
        config = self.state.directory("run") / f"trainingjob-{name}.json"
        config.write_text(run.model_dump_json(by_alias=True))
        self._termination_log(name).unlink(missing_ok=True)
        # The user's variables first: the supervisor's own wiring wins, as the operator's does in a pod.
        user_env, unset = runs.training_env(spec)
        env = {**user_env, **TORCHRUN_ENV, runtime.TERMINATION_LOG_ENV: str(self._termination_log(name))}
        process = self._spawn(key, "trainer", runs.training_command(spec, config), env)
        self.groups[key] = Group({"trainer": process})
        message = f"{runs.processes(spec)} processes on the CPU (torchrun, gloo)."
        if unset:
            names = ", ".join(unset[:3]) + (f" and {len(unset) - 3} more" if len(unset) > 3 else "")
            message += f" Not set locally (valueFrom): {names}."
            log.warning("%s: spec.env %s use valueFrom, which has nothing to read locally", key, ", ".join(unset))
        self._write(TRAINING_JOB, name, status.training, "Running", message, now=datetime.now(UTC))

    def _termination_log(self, name: str) -> Path:
        return self.state.directory("run") / f"trainingjob-{name}.termination"

    def _serving(self, deployment: Manifest, jobs: Mapping[str, Manifest]) -> None:
        name = deployment["metadata"]["name"]
        key = _key(MODEL_DEPLOYMENT, name)
        spec = self._judge(MODEL_DEPLOYMENT, deployment)
        if spec is None or key in self.failed:
            return
        now = datetime.now(UTC)
        group = self.groups.get(key)
        job = jobs.get(spec.model.from_training_job or "")
        promotion = gated(spec, deployment, jobs, job, group.served if group else None)
        # Without gates the agent follows every new version in place; with them, up to the one they allow.
        up_to = promotion.version if promotion is not None and spec.promotion.gates is not None else None
        if group is None:
            source = modeldeployment.resolve_source(spec, job, newest_exported(jobs, job))
            if promotion is not None and promotion.version is None and promotion.candidate is not None:
                source = Waiting(GATE_FAILED, promotion.message)
            if isinstance(source, Waiting):
                self._write(
                    MODEL_DEPLOYMENT,
                    name,
                    status.serving,
                    "Pending",
                    source.reason,
                    source.message,
                    now=now,
                    promotion=promotion,
                )
                return
            run = runs.serving_run(self.state, deployment, spec, source)
            run = run.model_copy(update={"up_to": up_to})
            config = self.state.directory("run") / f"modeldeployment-{name}.json"
            config.write_text(run.model_dump_json(by_alias=True))
            agent = self._spawn(
                key, "agent", [runs.PYTHON, "-m", "scaleml_workloads.serving.agent", "--config", str(config)]
            )
            group = self.groups[key] = Group({"agent": agent}, model=source.model_name, config=config)
            self._write(
                MODEL_DEPLOYMENT,
                name,
                status.serving,
                "Progressing",
                NO_READY_REPLICA,
                "The model agent links the exported version.",
                now=now,
                replicas=1,
                promotion=promotion,
            )
        elif up_to is not None and group.config is not None:
            # The agent reads its config again before each look: it links the version the gates allow.
            run = runtime.ServingRun.model_validate_json(group.config.read_text())
            if run.up_to != up_to:
                write_text_atomically(
                    group.config, run.model_copy(update={"up_to": up_to}).model_dump_json(by_alias=True)
                )
        if (problem := self._died(key, group)) is not None:
            self._stop(key)
            self.failed.add(key)
            self._write(
                MODEL_DEPLOYMENT, name, status.serving, "Failed", SERVER_CRASHING, problem, now=now, readyReplicas=0
            )
            log.error("%s: %s", key, problem)
            return
        if "triton" not in group.processes and versions(self.state.root / "serving" / name / group.model):
            self._start_triton(key, name, spec, group)
        if "triton" in group.processes:
            version = group.served = served_version(group.ports["http"], group.model)
            endpoints = {"http": f"http://127.0.0.1:{group.ports['http']}", "grpc": f"127.0.0.1:{group.ports['grpc']}"}
            self._write(
                MODEL_DEPLOYMENT,
                name,
                status.serving,
                "Progressing" if version is None else "Ready",
                NO_READY_REPLICA if version is None else REPLICAS_READY,
                "Triton loads the model." if version is None else f"Version {version} served.",
                now=now,
                servedVersion=version,
                replicas=1,
                readyReplicas=int(version is not None),
                endpoints=endpoints,
                promotion=promotion,
            )

    def _start_triton(self, key: str, name: str, spec: ModelDeploymentSpec, group: Group) -> None:
        group.ports.update(http=free_port(), grpc=free_port(), metrics=free_port())
        ports = tritonserver.Ports(group.ports["http"], group.ports["grpc"], group.ports["metrics"])
        path = self.log_path(key, "triton")
        threads = modeldeployment.threads_per_instance(spec)
        traces = self.state.directory("traces", name)
        served = runs.cpu_serving_spec(spec)
        tracing = runtime.trace_options(spec.capture, str(traces)) if runtime.traced_by_triton(served) else []
        with path.open("ab") as sink:
            group.processes["triton"] = tritonserver.start(
                self.state.root / "serving" / name,
                ports,
                self.state.directory("cache", "triton"),
                tracing,
                log=sink,
                threads=threads,
            )
        log.info("%s: started triton (pid %d, log %s)", key, group.processes["triton"].pid, path)
        if spec.capture.enabled:
            command = runs.capture_command(self.state, name, spec, traces)
            # Capture files are named after the pod; here the ModelDeployment names them.
            group.processes["capture"] = self._spawn(key, "capture", command, {"POD_NAME": name})

    def _monitoring(self, monitor: Manifest, deployments: Mapping[str, Manifest], jobs: Mapping[str, Manifest]) -> None:
        name = monitor["metadata"]["name"]
        key = _key(DRIFT_MONITOR, name)
        spec = self._judge(DRIFT_MONITOR, monitor)
        if spec is None or key in self.failed:
            return
        deployment = deployments.get(spec.target.model_deployment)
        anchor = jobs.get(spec.reference.from_training_job) if spec.reference.from_training_job else None
        inputs = driftmonitor.resolve_inputs(spec, deployment, anchor)
        group = self.groups.get(key)
        if isinstance(inputs, driftmonitor.Inputs):
            group = self._monitor(key, monitor, spec, inputs, group)
        problem = self._died(key, group) if group is not None else None
        if problem is not None:
            self._stop(key)
            self.failed.add(key)
            log.error("%s: %s", key, problem)
        # The operator's retraining step, on the TrainingJobs of the state directory.
        now, current = datetime.now(UTC), self.state.status(DRIFT_MONITOR, name)
        # Local jobs have no Job: each one's status says whether it finished.
        past = retraining.retrained(
            (job, None)
            for job in jobs.values()
            if (job["metadata"].get("labels") or {}).get(retraining.RETRAINED_BY_LABEL) == name
        )
        source = retraining.source_job(spec, deployment, jobs)
        # Local mode runs no image, only its own Python: a job's image is no code of its own here.
        allowed = retraining.AllowedCode(image_prefixes=("",))
        verdict = retraining.retrain(
            spec, monitor["metadata"], current, past, source, now, allowed=allowed, model_deployment=deployment
        )
        refused = self._create(name, verdict.job, jobs)
        self._write(
            DRIFT_MONITOR,
            name,
            status.monitoring,
            reference=inputs if isinstance(inputs, Waiting) else inputs.reference_version,
            running=group is not None and problem is None,
            retraining=verdict,
            created=verdict.job["metadata"]["name"] if verdict.job is not None and not refused else None,
            refused=refused,
            now=now,
        )

    def _monitor(
        self, key: str, monitor: Manifest, spec: DriftMonitorSpec, inputs: driftmonitor.Inputs, group: Group | None
    ) -> Group:
        """The monitor's processes, started on `inputs`, or restarted when the reference they read is stale."""
        name = monitor["metadata"]["name"]
        reference = driftmonitor.reference(inputs)
        if group is not None and group.reference == reference:
            return group
        if group is not None:
            log.info("%s: the served version is now %s: restarting the monitor", key, inputs.reference_version)
            self._stop(key)
            self.state.workload_status_file(DRIFT_MONITOR, name).patch(EPISODE_RESET)
        run = runs.monitor_run(self.state, monitor, spec, inputs)
        config = self.state.directory("run") / f"driftmonitor-{name}.json"
        config.write_text(run.model_dump_json(by_alias=True))
        process = self._spawn(key, "monitor", [runs.PYTHON, "-m", "scaleml_workloads.monitor", "--config", str(config)])
        group = self.groups[key] = Group({"monitor": process}, reference=reference)
        return group

    def _create(self, monitor: str, job: dict[str, Any] | None, jobs: Mapping[str, Manifest]) -> str:
        """Stores the retraining TrainingJob unless it exists (created before); says why not if it cannot."""
        if job is None or (name := job["metadata"]["name"]) in jobs:
            return ""
        try:
            self.state.apply(job)
        except LocalError as error:
            return f"TrainingJob {name}: {error}"
        source = job["metadata"]["labels"][retraining.RETRAIN_OF_LABEL]
        log.info("driftmonitors/%s: created TrainingJob %s from %s", monitor, name, source)
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaleml_local.supervisor", description=__doc__)
    parser.add_argument("--state", type=Path, required=True, help="The state directory to supervise.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor = Supervisor(State(args.state.resolve()))
    try:
        supervisor.claim()
    except LocalError as error:
        log.error("%s", error)
        return 1
    stop = stop_on_signals(log, "stopping every process")
    supervisor.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
