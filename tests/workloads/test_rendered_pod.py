"""The pod the operator renders for a TrainingJob, run for real: its init container and its torchrun command.

What the kubelet would do is done by hand: the claims and the run config's ConfigMap become local
directories and a file, and worker 0's DNS name becomes the loopback address. Everything else
(command, flags, environment, config) is the operator's own output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from scaleml_api.runtime import CONFIG_DIR, CONFIG_FILE, EXIT_INVALID_INPUT, TERMINATION_LOG_ENV
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import trainingjob as build
from scaleml_operator.builders.meta import Owner
from tests.support.ports import free_port
from tests.workloads.runs import churn_table, run, version_dir, write_parquet

pytestmark = pytest.mark.workloads

OWNER = Owner("TrainingJob", "churn", "ml", "4f2a-uid")


def _spec(target: str = "churned") -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(
        {
            "data": {"source": "churn/train.parquet", "volumeClaim": "datasets", "target": target},
            "model": {"architecture": "mlp", "params": {"hiddenSizes": [16]}},
            "hyperparameters": {"epochs": 2, "batchSize": 64, "learningRate": 0.01},
            "resources": {"workers": 1, "procsPerWorker": 2},
            "checkpoint": {"volumeClaim": "checkpoints", "everySteps": 10},
            "output": {"volumeClaim": "models", "modelName": "churn"},
        }
    )


def _containers(spec: TrainingJobSpec, root: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """The check's and the trainer's commands, and their environment, as they would run in the pod.

    The claims are directories under `root`, the ConfigMap's file is written there too (the kubelet
    would mount it), and worker 0's DNS name is the loopback address.
    """
    children = {c["kind"]: c for c in build.children(OWNER, spec, "scaleml/workloads:test").apply}
    pod = children["Job"]["spec"]["template"]["spec"]
    (check,) = pod["initContainers"]
    (trainer,) = pod["containers"]
    assert check["env"] == trainer["env"]
    config = json.loads(children["ConfigMap"]["data"][CONFIG_FILE])
    config.update(
        dataDir=str(root / "data"),
        checkpointDir=str(root / "checkpoints"),
        outputDir=str(root / "models"),
        reportStatus=False,
        metricsPort=0,
    )
    (root / CONFIG_FILE).write_text(json.dumps(config))
    env = {
        **os.environ,
        **{e["name"]: e["value"] for e in trainer["env"]},
        "HOME": str(root / "scratch"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "scratch" / "inductor"),
        TERMINATION_LOG_ENV: str(root / "termination-log"),
    }
    return _local(check["command"], root), _local(trainer["command"], root), env


def _local(command: list[str], root: Path) -> list[str]:
    """The command with this interpreter, the config file under `root`, and worker 0's DNS name as loopback."""
    port = free_port()
    local = [
        arg.replace(build.rendezvous_endpoint(OWNER), f"127.0.0.1:{port}").replace(CONFIG_DIR, str(root))
        for arg in command
    ]
    assert local[0] == "python"
    return [sys.executable, *local[1:]]


def test_the_rendered_pod_checks_its_input_then_trains_and_exports(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "churn" / "train.parquet", churn_table(600))
    check, trainer, env = _containers(_spec(), tmp_path)

    checked = run(check, env)
    assert checked.returncode == 0, checked.stderr

    trained = run(trainer, env, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert (version_dir(tmp_path, 1) / "model.pt").exists()
    assert json.loads((tmp_path / "termination-log").read_text()) == {"modelVersion": 1}
    assert list((tmp_path / "checkpoints").iterdir()), "no checkpoint written"


def test_the_rendered_check_fails_bad_input_with_exit_code_two(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "churn" / "train.parquet", churn_table(100))
    check, _, env = _containers(_spec(target="cancelled"), tmp_path)
    checked = run(check, env)
    assert checked.returncode == EXIT_INVALID_INPUT
    assert "cancelled" in (tmp_path / "termination-log").read_text()
