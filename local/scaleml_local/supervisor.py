"""The supervisor of a state directory: what the operator and the kubelet do on a cluster, with local processes.

Every second it reads the applied objects and converges: a TrainingJob runs torchrun once; a
ModelDeployment runs the model agent, then Triton and the capture proxy once a version is linked;
a DriftMonitor runs the monitor on the served version's profile (restarted when that version
changes) and applies the retraining policy with the operator's own `retraining` functions. Each
workload process leads a process group of its own, so stopping one stops its children too
(torchrun's workers, Triton's Python backend stubs); SIGTERM or SIGINT stops every group.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Final, TypeVar

from pydantic import BaseModel

from scaleml_api import runtime
from scaleml_api.conditions import Waiting
from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_local import runs
from scaleml_local.state import LocalError, Manifest, State, running, timestamp
from scaleml_operator.builders import driftmonitor, modeldeployment, retraining
from scaleml_workloads.export.repository import versions
from scaleml_workloads.serving import tritonserver

log = logging.getLogger("scaleml_local")

TICK_SECONDS: Final = 1.0
# Triton waits up to EXIT_TIMEOUT_SECONDS for requests in flight; then the group is killed.
STOP_SECONDS: Final = runtime.EXIT_TIMEOUT_SECONDS + 10
# Clears the drift episode of the previous reference: the new version is judged by its own windows.
EPISODE_RESET: Final = {"driftDetected": False, "consecutiveDriftedWindows": 0, "driftSince": None}

SpecT = TypeVar("SpecT", bound=BaseModel)


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
    reference_version: int | None = None


def _key(kind: AnyKind, name: str) -> str:
    return f"{kind.plural}/{name}"


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

    def _spec(self, kind: AnyKind, manifest: Manifest, model: type[SpecT]) -> SpecT | None:
        name = manifest["metadata"]["name"]
        try:
            spec = parse_spec(kind, manifest["spec"])
        except InvalidSpecError as error:
            self.state.status_file(kind, name).patch({"phase": "Failed", "message": f"invalid spec: {error}"})
            return None
        assert isinstance(spec, model)
        return spec

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
        key, status = _key(TRAINING_JOB, name), self.state.status_file(TRAINING_JOB, name)
        if (group := self.groups.get(key)) is not None:
            code = group.processes["trainer"].poll()
            if code is None:
                return
            self._stop(key)
            if code == 0:
                version = self.state.status(TRAINING_JOB, name).get("modelVersion")
                status.patch(
                    {"phase": "Succeeded", "completionTime": timestamp(), "message": f"Exported version {version}."}
                )
            else:
                termination = self._termination_log(name)
                reason = termination.read_text().strip() if termination.exists() else ""
                message = f"torchrun exited with code {code}: {reason or 'see ' + str(self.log_path(key, 'trainer'))}"
                status.patch({"phase": "Failed", "completionTime": timestamp(), "message": message})
            log.info("%s: %s", key, self.state.status(TRAINING_JOB, name).get("message"))
            return
        if job["status"].get("phase") in ("Succeeded", "Failed"):
            return
        spec = self._spec(TRAINING_JOB, job, TrainingJobSpec)
        if spec is None:
            return
        if spec.run_policy.suspend:
            status.patch({"phase": "Suspended"})
            return
        run = runs.training_run(self.state, job, spec)
        config = self.state.directory("run") / f"trainingjob-{name}.json"
        config.write_text(run.model_dump_json(by_alias=True))
        self._termination_log(name).unlink(missing_ok=True)
        env = {**runtime.TORCHRUN_ENV, runtime.TERMINATION_LOG_ENV: str(self._termination_log(name))}
        process = self._spawn(key, "trainer", runs.training_command(spec, config), env)
        self.groups[key] = Group({"trainer": process})
        status.patch(
            {
                "phase": "Running",
                "startTime": timestamp(),
                "message": f"{runs.processes(spec)} processes on the CPU (torchrun, gloo).",
            }
        )

    def _termination_log(self, name: str) -> Path:
        return self.state.directory("run") / f"trainingjob-{name}.termination"

    def _serving(self, deployment: Manifest, jobs: Mapping[str, Manifest]) -> None:
        name = deployment["metadata"]["name"]
        key, status = _key(MODEL_DEPLOYMENT, name), self.state.status_file(MODEL_DEPLOYMENT, name)
        spec = self._spec(MODEL_DEPLOYMENT, deployment, ModelDeploymentSpec)
        if spec is None or key in self.failed:
            return
        job = jobs.get(spec.model.from_training_job) if spec.model.from_training_job else None
        if spec.model.repository is not None:
            claim, model = spec.model.repository.volume_claim, spec.model.repository.model_name
        elif job is not None:
            claim, model = job["spec"]["output"]["volumeClaim"], job["spec"]["output"]["modelName"]
        else:
            claim = model = ""
        exported = versions(self.state.volume(claim) / model) if claim else []
        source = modeldeployment.resolve_source(spec, job, max(exported, default=None))
        group = self.groups.get(key)
        if group is None:
            if isinstance(source, Waiting):
                status.patch({"phase": "Pending", "message": source.message})
                return
            run = runs.serving_run(self.state, deployment, spec, source)
            config = self.state.directory("run") / f"modeldeployment-{name}.json"
            config.write_text(run.model_dump_json(by_alias=True))
            agent = self._spawn(
                key, "agent", [runs.PYTHON, "-m", "scaleml_workloads.serving.agent", "--config", str(config)]
            )
            group = self.groups[key] = Group({"agent": agent})
            status.patch(
                {"phase": "Progressing", "message": "The model agent links the exported version.", "replicas": 1}
            )
        if (problem := self._died(key, group)) is not None:
            self._stop(key)
            self.failed.add(key)
            status.patch({"phase": "Failed", "readyReplicas": 0, "message": problem})
            log.error("%s: %s", key, problem)
            return
        serving = self.state.root / "serving" / name / model
        linked = bool(versions(serving))
        if "triton" not in group.processes and linked:
            self._start_triton(key, name, spec, group)
        if "triton" in group.processes:
            version = served_version(group.ports["http"], model)
            front = "capture-" if spec.capture.enabled else ""
            ready = version is not None
            status.patch(
                {
                    "phase": "Ready" if ready else "Progressing",
                    "servedVersion": version,
                    "replicas": 1,
                    "readyReplicas": int(ready),
                    "endpoints": {
                        "http": f"http://127.0.0.1:{group.ports[front + 'http']}",
                        "grpc": f"127.0.0.1:{group.ports[front + 'grpc']}",
                    },
                    "message": f"Version {version} served." if ready else "Triton loads the model.",
                }
            )

    def _start_triton(self, key: str, name: str, spec: ModelDeploymentSpec, group: Group) -> None:
        group.ports.update(http=free_port(), grpc=free_port(), metrics=free_port())
        ports = tritonserver.Ports(group.ports["http"], group.ports["grpc"], group.ports["metrics"])
        path = self.log_path(key, "triton")
        threads = modeldeployment.threads_per_instance(spec)
        with path.open("ab") as sink:
            group.processes["triton"] = tritonserver.start(
                self.state.root / "serving" / name,
                ports,
                self.state.directory("cache", "triton"),
                log=sink,
                threads=threads,
            )
        log.info("%s: started triton (pid %d, log %s)", key, group.processes["triton"].pid, path)
        if spec.capture.enabled:
            group.ports.update({"capture-http": free_port(), "capture-grpc": free_port()})
            proxy = {"http": group.ports["capture-http"], "grpc": group.ports["capture-grpc"]}
            command = runs.capture_command(self.state, spec, group.ports, proxy)
            # Capture files are named after the pod; here the ModelDeployment names them.
            group.processes["capture"] = self._spawn(key, "capture", command, {"POD_NAME": name})

    def _monitoring(self, monitor: Manifest, deployments: Mapping[str, Manifest], jobs: Mapping[str, Manifest]) -> None:
        name = monitor["metadata"]["name"]
        key = _key(DRIFT_MONITOR, name)
        spec = self._spec(DRIFT_MONITOR, monitor, DriftMonitorSpec)
        if spec is None or key in self.failed:
            return
        deployment = deployments.get(spec.target.model_deployment)
        anchor = jobs.get(spec.reference.from_training_job) if spec.reference.from_training_job else None
        inputs = driftmonitor.resolve_inputs(spec, deployment, anchor)
        group = self.groups.get(key)
        if isinstance(inputs, Waiting):
            return
        if group is not None and group.reference_version != inputs.reference_version:
            log.info("%s: the served version is now %s: restarting the monitor", key, inputs.reference_version)
            self._stop(key)
            self.state.workload_status_file(DRIFT_MONITOR, name).patch(EPISODE_RESET)
            group = None
        if group is None:
            run = runs.monitor_run(self.state, monitor, spec, inputs)
            config = self.state.directory("run") / f"driftmonitor-{name}.json"
            config.write_text(run.model_dump_json(by_alias=True))
            process = self._spawn(
                key, "monitor", [runs.PYTHON, "-m", "scaleml_workloads.monitor", "--config", str(config)]
            )
            group = self.groups[key] = Group({"monitor": process}, reference_version=inputs.reference_version)
            self.state.status_file(DRIFT_MONITOR, name).patch({"referenceVersion": inputs.reference_version})
        if (problem := self._died(key, group)) is not None:
            self._stop(key)
            self.failed.add(key)
            log.error("%s: %s", key, problem)
            return
        self._retrain(monitor, spec, deployment, jobs)

    def _retrain(
        self, monitor: Manifest, spec: DriftMonitorSpec, deployment: Manifest | None, jobs: Mapping[str, Manifest]
    ) -> None:
        meta, status = monitor["metadata"], self.state.status(DRIFT_MONITOR, monitor["metadata"]["name"])
        last = jobs.get(status.get("lastRetrainJob") or "")
        decision = retraining.decide(spec.retrain, status, last, datetime.now(UTC))
        if not decision.create:
            return
        source = retraining.source_job(spec, deployment, jobs)
        if source is None:
            return
        drift_since = str(status["driftSince"])
        name = retraining.job_name(source["metadata"]["name"], meta["uid"], drift_since)
        job = retraining.retraining_job(source, spec.retrain, name=name, monitor=meta["name"], drift_since=drift_since)
        if name not in jobs:
            try:
                self.state.apply(job)
            except LocalError as error:
                log.error("%s: cannot retrain: %s", meta["name"], error)
                return
            log.info(
                "driftmonitors/%s: created TrainingJob %s from %s: %s",
                meta["name"],
                name,
                source["metadata"]["name"],
                decision.message,
            )
        if status.get("lastRetrainJob") != name:
            self.state.status_file(DRIFT_MONITOR, meta["name"]).patch(
                {
                    "lastRetrainJob": name,
                    "lastRetrainTime": timestamp(),
                    "retrainsTriggered": int(status.get("retrainsTriggered") or 0) + 1,
                }
            )


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
    stop = threading.Event()

    def stop_on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping every process", signum)
        stop.set()

    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)
    supervisor.run(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
