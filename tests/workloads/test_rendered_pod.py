"""The pod the operator renders for a TrainingJob, run for real: its init container and its torchrun command.

What the kubelet would do is done by hand: the claims become local directories and worker 0's DNS
name becomes the loopback address. Everything else (command, flags, environment, config) is the
operator's own output.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from scaleml_api.runtime import CONFIG_ENV, EXIT_INVALID_INPUT, TERMINATION_LOG_ENV
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


def _containers(spec: TrainingJobSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = build.batch_job(OWNER, spec, "scaleml/workloads:test")["spec"]["template"]["spec"]
    (check,) = pod["initContainers"]
    (trainer,) = pod["containers"]
    return check, trainer


def _mounted(container: dict[str, Any], root: Path) -> dict[str, str]:
    """The container's environment, with its volumes at directories under `root`."""
    env = {e["name"]: e["value"] for e in container["env"]}
    config = json.loads(env[CONFIG_ENV])
    config.update(
        dataDir=str(root / "data"),
        checkpointDir=str(root / "checkpoints"),
        outputDir=str(root / "models"),
        reportStatus=False,
        metricsPort=0,
    )
    return {
        **os.environ,
        **env,
        CONFIG_ENV: json.dumps(config),
        "HOME": str(root / "scratch"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "scratch" / "inductor"),
        TERMINATION_LOG_ENV: str(root / "termination-log"),
    }


def _local(command: list[str]) -> list[str]:
    """The command with this interpreter, and worker 0's DNS name as loopback."""
    port = free_port()
    local = [arg.replace(build.rendezvous_endpoint(OWNER), f"127.0.0.1:{port}") for arg in command]
    assert local[0] == "python"
    return [sys.executable, *local[1:]]


def test_the_rendered_pod_checks_its_input_then_trains_and_exports(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "churn" / "train.parquet", churn_table(600))
    check, trainer = _containers(_spec())

    checked = run(_local(check["command"]), _mounted(check, tmp_path))
    assert checked.returncode == 0, checked.stderr

    trained = run(_local(trainer["command"]), _mounted(trainer, tmp_path), timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert (version_dir(tmp_path, 1) / "model.pt").exists()
    assert json.loads((tmp_path / "termination-log").read_text()) == {"modelVersion": 1}
    assert list((tmp_path / "checkpoints").iterdir()), "no checkpoint written"


def test_the_rendered_check_fails_bad_input_with_exit_code_two(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "churn" / "train.parquet", churn_table(100))
    check, _ = _containers(_spec(target="cancelled"))
    checked = run(_local(check["command"]), _mounted(check, tmp_path))
    assert checked.returncode == EXIT_INVALID_INPUT
    assert "cancelled" in (tmp_path / "termination-log").read_text()
