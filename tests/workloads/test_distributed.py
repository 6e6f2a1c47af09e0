"""Training under torchrun with gloo: several processes, several agents ("nodes"), and a worker killed mid-run."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scaleml_api.profile import DataProfile
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
    """A torchrun agent writing to `log`, in a session of its own so that its workers end with it."""
    with log.open("wb") as output:
        agent = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield agent
        finally:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()


def _workers(launcher: int) -> list[int]:
    """The pids of the training workers below a launcher (launcher -> torchrun agent -> workers)."""
    workers, pending = [], [launcher]
    while pending:
        pid = pending.pop()
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            # The module a python process runs: the launcher's, torchrun's or the worker's.
            module = argv[argv.index(b"-m") + 1] if b"-m" in argv else b""
            if module == b"scaleml_workloads.training":
                workers.append(int(child))
            else:
                pending.append(int(child))
    return workers


def _checkpoint_steps(directory: Path) -> list[int]:
    return sorted(
        int(match[1]) for path in directory.glob("step-*.pt") if (match := re.match(r"step-(\d+)", path.name))
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
        # Polled at a steady 20 ms: the whole run lasts seconds, and a backed-off poll would kill it as it ends.
        wait_for(
            lambda: checkpoints.is_dir() and _checkpoint_steps(checkpoints),
            60,
            "a first checkpoint",
            interval=0.02,
            max_interval=0.02,
        )
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
