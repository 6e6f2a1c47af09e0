"""Training under torchrun with gloo: several processes, several agents ("nodes"), workers killed, pods stopped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scaleml_api.profile import DataProfile
from scaleml_api.runtime import EXIT_INTERRUPTED
from scaleml_workloads.training.interruption import lost_group
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.workloads.runs import (
    churn_table,
    run,
    torchrun,
    training_run,
    version_dir,
    workload_env,
    write_config,
    write_parquet,
)

pytestmark = pytest.mark.workloads

SAME_PARAMETERS = re.compile(r"all (\d+) ranks finished with the same parameters")


def _state(root: Path, version: int = 1) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(version_dir(root, version) / "state_dict.pt", weights_only=True)
    return state


def test_two_processes_train_the_same_model_as_one_process_with_twice_the_batch(tmp_path: Path) -> None:
    # 1600 rows, 20% held out: 1280 training rows, a whole number of global batches of 128, so that
    # rank r's k-th batch of 64 is exactly half of the single process's k-th batch of 128.
    spec = {"data": {"validationSplit": 0.2}, "hyperparameters": {"epochs": 2}}
    for name, batch in (("two", 64), ("one", 128)):
        write_parquet(tmp_path / name / "data" / "train.parquet", churn_table(1600))
        config = write_config(
            tmp_path / name / "run.json",
            training_run(tmp_path / name, {**spec, "hyperparameters": {"epochs": 2, "batchSize": batch}}),
        )
        processes = "2" if name == "two" else "1"
        result = run(
            torchrun(config, "--standalone", f"--nproc-per-node={processes}"),
            workload_env(tmp_path / name / "termination-log"),
        )
        assert result.returncode == 0, result.stderr
        assert [int(count) for count in SAME_PARAMETERS.findall(result.stderr)] == [int(processes)] * int(processes)

    assert sorted(path.name for path in (tmp_path / "two" / "models" / "churn").iterdir()) == ["1", "config.pbtxt"]
    two, one = _state(tmp_path / "two"), _state(tmp_path / "one")
    assert two.keys() == one.keys()
    for name in two:
        # Equal up to the order of float additions (a mean of two half-batch gradients).
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    # Importance and calibration are measured by rank 0 alone, on the same validation rows: the same numbers.
    profiles = [
        DataProfile.model_validate_json((version_dir(tmp_path / name, 1) / "profile.json").read_text())
        for name in ("two", "one")
    ]
    for two_feature, one_feature in zip(profiles[0].features, profiles[1].features, strict=True):
        assert two_feature.importance is not None
        assert one_feature.importance is not None
        assert two_feature.importance == pytest.approx(one_feature.importance, abs=0.01), two_feature.name
    assert profiles[0].calibration is not None
    assert profiles[1].calibration is not None
    assert profiles[0].calibration.temperature == pytest.approx(profiles[1].calibration.temperature, rel=0.01)


def test_two_torchrun_agents_on_loopback_form_one_group(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(1000))
    config = write_config(tmp_path / "run.json", training_run(tmp_path, {"hyperparameters": {"epochs": 2}}))
    port = free_port()
    logs = [tmp_path / f"agent-{index}.log" for index in range(2)]
    with contextlib.ExitStack() as stack:
        agents = [
            stack.enter_context(
                _agent(
                    torchrun(
                        config,
                        "--nnodes=2",
                        "--nproc-per-node=1",
                        "--rdzv-backend=c10d",
                        f"--rdzv-endpoint=127.0.0.1:{port}",
                        "--rdzv-id=two-agents",
                        "--max-restarts=0",
                    ),
                    workload_env(tmp_path / f"termination-log-{index}"),
                    log,
                )
            )
            for index, log in enumerate(logs)
        ]
        codes = [agent.wait(timeout=90) for agent in agents]

    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(outputs)
    for output in outputs:
        assert SAME_PARAMETERS.search(output)
    assert "[rank 0/2]" in "".join(outputs)
    assert "[rank 1/2]" in "".join(outputs)
    assert sorted(path.name for path in (tmp_path / "models" / "churn").iterdir()) == ["1", "config.pbtxt"]


@contextlib.contextmanager
def _agent(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A torchrun agent writing to `log`, in a session of its own; if it is left running, it ends with its workers."""
    with log.open("wb") as output:
        agent = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield agent
        finally:
            if agent.poll() is None:
                # torchrun starts each worker in a session of its own: they are killed by pid, as the
                # container of a stopped pod takes all its processes with it.
                for worker in _workers(agent.pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker, signal.SIGKILL)
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()


def _workers(launcher: int) -> list[int]:
    """The pids of the training workers below a launcher (launcher -> torchrun agent -> workers)."""
    workers, pending = [], [launcher]
    while pending:
        pid = pending.pop()
        # A process may end while it is looked at: it is no longer below the launcher.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                    # The module a python process runs: the launcher's, torchrun's or the worker's.
                    module = argv[argv.index(b"-m") + 1] if b"-m" in argv else b""
                    if module == b"scaleml_workloads.training":
                        workers.append(int(child))
                    else:
                        pending.append(int(child))
    return workers


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _checkpoint_steps(directory: Path) -> list[int]:
    return sorted(
        int(match[1]) for path in directory.glob("step-*.pt") if (match := re.match(r"step-(\d+)", path.name))
    )


def _await_first_checkpoint(directory: Path) -> None:
    # Polled at a steady 20 ms: the whole run lasts seconds, and a backed-off poll would miss it as it ends.
    wait_for(
        lambda: directory.is_dir() and _checkpoint_steps(directory),
        60,
        "a first checkpoint",
        interval=0.02,
        max_interval=0.02,
    )


def test_a_killed_worker_resumes_from_its_checkpoint_and_ends_bit_identical(tmp_path: Path) -> None:
    # Dropout makes the result depend on every rank's RNG state, which the checkpoint must restore.
    spec = {
        "model": {"params": {"hiddenSizes": [256, 256], "dropout": 0.1}},
        "hyperparameters": {"epochs": 2, "batchSize": 32},
        "checkpoint": {"everySteps": 25, "keep": 2},
    }
    commands = {}
    for name in ("uninterrupted", "killed"):
        write_parquet(tmp_path / name / "data" / "train.parquet", churn_table(6000))
        config = write_config(tmp_path / name / "run.json", training_run(tmp_path / name, spec))
        commands[name] = torchrun(config, "--standalone", "--nproc-per-node=2", "--max-restarts=1")
    baseline = run(commands["uninterrupted"], workload_env(tmp_path / "uninterrupted" / "termination-log"))
    assert baseline.returncode == 0, baseline.stderr

    checkpoints = tmp_path / "killed" / "checkpoints"
    log = tmp_path / "killed" / "agent.log"
    with _agent(commands["killed"], workload_env(tmp_path / "killed" / "termination-log"), log) as agent:
        _await_first_checkpoint(checkpoints)
        os.kill(_workers(agent.pid)[0], signal.SIGKILL)
        # The agent needs seconds to restart the group; what is on disk now is what a restart can resume from.
        newest_at_kill = _checkpoint_steps(checkpoints)[-1]
        code = agent.wait(timeout=90)
    stderr = log.read_text()
    assert code == 0, stderr

    total_steps = int(re.findall(r"step (\d+)/(\d+)", stderr)[-1][1])
    assert newest_at_kill < total_steps, "the worker was killed after training had ended"
    resumed = re.findall(r"resumed from \S+step-(\d+)\.pt", stderr)
    # Both ranks resume, from the newest checkpoint written before the kill: at most one interval is lost.
    assert [int(step) for step in resumed] == [newest_at_kill, newest_at_kill], stderr
    uninterrupted, killed = _state(tmp_path / "uninterrupted"), _state(tmp_path / "killed")
    for name in uninterrupted:
        assert torch.equal(uninterrupted[name], killed[name]), name


# A stopped pod ends within this many seconds, well inside the kubelet's grace period (30 s by
# default): torchrun stops its workers with SIGTERM and waits for them.
STOP_SECONDS = 5


def _listening(port: int) -> bool:
    """Whether a process listens on `port` (torchrun's c10d rendezvous store), seen without connecting to it."""
    return any(
        columns[1].endswith(f":{port:04X}") and columns[3] == "0A"  # 0A: LISTEN
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for columns in (row.split() for row in Path(table).read_text().splitlines()[1:])
    )


@contextlib.contextmanager
def _two_pods(config: Path, root: Path, name: str, **env: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The launchers of a two-pod TrainingJob without elastic membership, as its pods run them, on loopback.

    Pod 0 starts first and hosts the rendezvous store, as the pod the endpoint names does; its
    torchrun, started first, also gets rank 0 (ranks follow the agents' host names, then their
    pids). Pod i logs to root / f"{name}-{i}.log", its termination log is root / f"{name}-{i}-termination-log".
    """
    port = free_port()
    command = torchrun(
        config,
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=two-pods",
        "--max-restarts=0",
    )
    with contextlib.ExitStack() as stack:
        pods = []
        for index in range(2):
            log = root / f"{name}-{index}.log"
            pod_env = workload_env(root / f"{name}-{index}-termination-log", **env)
            pods.append(stack.enter_context(_agent(command, pod_env, log)))
            if index == 0:
                wait_for(lambda: _listening(port) or pods[0].poll() is not None, 60, "pod 0's rendezvous store")
        yield pods


@pytest.mark.parametrize("stopped", [0, 1], ids=["worker-0-hosting-the-rendezvous-is-stopped", "worker-1-is-stopped"])
def test_a_stopped_pod_ends_143_its_peer_is_interrupted_and_a_retry_resumes_from_the_checkpoint(
    tmp_path: Path, stopped: int
) -> None:
    spec = {"hyperparameters": {"epochs": 2, "batchSize": 32}, "checkpoint": {"everySteps": 10, "keep": 2}}
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(3000))
    config = write_config(tmp_path / "run.json", training_run(tmp_path, spec))
    checkpoints = tmp_path / "checkpoints"

    with _two_pods(config, tmp_path, "first") as pods:
        _await_first_checkpoint(checkpoints)
        victim, survivor = pods[stopped], pods[1 - stopped]
        workers = _workers(victim.pid)
        # As the kubelet stops a pod: SIGTERM to the container's first process, the launcher.
        stopping = time.monotonic()
        victim.send_signal(signal.SIGTERM)
        victim_code = victim.wait(timeout=30)
        stopped_in = time.monotonic() - stopping
        survivor_code = survivor.wait(timeout=60)
    first = [(tmp_path / f"first-{index}.log").read_text() for index in range(2)]
    assert "[rank 0/2]" in first[0], "pod 0, which hosts the rendezvous, should be worker 0"
    assert (victim_code, survivor_code) == (143, EXIT_INTERRUPTED), "\n".join(first)
    assert stopped_in < STOP_SECONDS, f"the stopped pod took {stopped_in:.1f} s to end"
    assert workers, "the stopped pod had no worker running"
    assert not [pid for pid in workers if _running(pid)], "the stopped pod's workers outlived it"
    # The survivor's worker said why it failed, rather than the launcher guessing.
    assert "1 of 1 local workers lost their group" in first[1 - stopped], first[1 - stopped]
    assert not (tmp_path / "models" / "churn" / "1").exists(), "the run ended before the stop"
    # What the retry finds on disk: a checkpoint may have been finishing as the pod stopped.
    newest = _checkpoint_steps(checkpoints)[-1]

    # The Job's retry: both pods again, the same run and volumes.
    with _two_pods(config, tmp_path, "retry") as pods:
        codes = [pod.wait(timeout=90) for pod in pods]
    retry = [(tmp_path / f"retry-{index}.log").read_text() for index in range(2)]
    assert codes == [0, 0], "\n".join(retry)
    resumed = [int(step) for step in re.findall(r"resumed from \S+step-(\d+)\.pt", "".join(retry))]
    assert resumed == [newest, newest], "\n".join(retry)
    total_steps = int(re.findall(r"step (\d+)/(\d+)", "".join(retry))[-1][1])
    assert newest < total_steps, "the checkpoint resumed from was written at the end of training"
    assert sorted(path.name for path in (tmp_path / "models" / "churn").iterdir()) == ["1", "config.pbtxt"]


# A custom model with a bug that shows on rank 1 only, a few steps into training.
BUGGY_MODEL = """
import os

from torch import nn


class Buggy(nn.Linear):
    def __init__(self) -> None:
        super().__init__(5, 2)  # the churn table's 5 features, 2 classes
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if os.environ["RANK"] == "1" and self.calls > 3:
            raise ValueError("a bug in the model")
        return super().forward(x)


def build() -> nn.Module:
    return Buggy()
"""


def _buggy_run(root: Path) -> tuple[Path, dict[str, str]]:
    """A run config whose model fails on rank 1, and the environment that imports the model."""
    (root / "buggy_model.py").write_text(BUGGY_MODEL)
    write_parquet(root / "data" / "train.parquet", churn_table(1000))
    model = {"architecture": "custom", "entrypoint": "buggy_model:build", "params": {}}
    config = write_config(root / "run.json", training_run(root, {"model": model, "checkpoint": None}))
    return config, {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def test_a_program_error_fails_its_pod_with_1_and_interrupts_the_other(tmp_path: Path) -> None:
    config, env = _buggy_run(tmp_path)
    with _two_pods(config, tmp_path, "run", **env) as pods:
        codes = [pod.wait(timeout=90) for pod in pods]
    logs = [(tmp_path / f"run-{index}.log").read_text() for index in range(2)]
    assert "[rank 1/2]" in logs[1], "pod 1 should be worker 1"
    # Exit 1 fails the TrainingJob at once; the other pod's 75 alone would have been retried.
    assert codes == [EXIT_INTERRUPTED, 1], "\n".join(logs)
    assert "a local worker failed with a program error" in logs[1]
    assert (tmp_path / "run-1-termination-log").read_text() == "ValueError: a bug in the model"


def test_a_program_error_beats_a_lost_peer_in_the_same_pod(tmp_path: Path) -> None:
    config, env = _buggy_run(tmp_path)
    # One pod with two workers: rank 1 fails, and rank 0 loses its peer.
    result = run(
        torchrun(config, "--standalone", "--nproc-per-node=2", "--max-restarts=0"),
        workload_env(tmp_path / "termination-log", **env),
    )
    assert result.returncode == 1, result.stderr
    assert "local-rank-0 interrupted, local-rank-1 program-error" in result.stderr, result.stderr


# What torch 2.15 raised in a worker whose peer went away (see scaleml_workloads.training.interruption),
# and errors of the program that must not pass for that.
GLOO = "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp"


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (RuntimeError(f"{GLOO}/pair.cc:561] Connection closed by peer [127.0.0.1]:9645. This is typically ..."), True),
        (RuntimeError(f"{GLOO}/pair.cc:545] Read error [127.0.0.1]:7606: Connection reset by peer. This is ..."), True),
        (
            RuntimeError(f"{GLOO}/unbound_buffer.cc:78] Timed out waiting 1800000ms for recv operation to complete"),
            True,
        ),
        (torch.distributed.DistNetworkError("Failed to recv, got 0 bytes. Connection was likely closed."), True),
        (torch.distributed.DistNetworkError("Broken pipe"), True),
        (torch.distributed.DistStoreError("wait timeout after 5000ms, keys: /0//cpu//0/1"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied (64x5 and 6x2)"), False),
        (ValueError("a bug in the model"), False),
        # Another error that mentions a connection is the program's: a custom model reading a socket, say.
        (ConnectionResetError("Connection reset by peer"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_a_lost_group_is_told_apart_from_a_program_error(error: BaseException, lost: bool) -> None:
    assert lost_group(error) is lost
