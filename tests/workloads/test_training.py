"""A whole run of the training workload in one process: it learns, exports, and can warm-start from its export."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from scaleml_api.card import ModelCard
from scaleml_api.profile import DataProfile
from scaleml_api.runtime import EXIT_INVALID_INPUT
from scaleml_workloads.training import launch
from tests.workloads.runs import (
    MODEL_NAME,
    churn_table,
    run,
    torchrun,
    training_run,
    version_dir,
    workload,
    workload_env,
    write_config,
    write_parquet,
)

pytestmark = pytest.mark.workloads


def test_a_single_process_run_learns_and_exports_a_complete_version(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(3000, missing=0.05))
    config = write_config(
        tmp_path / "run.json",
        training_run(
            tmp_path,
            {"data": {"checks": {"maxMissingFraction": 0.1}}, "output": {"formats": ["torchscript", "onnx"]}},
        ),
    )
    termination_log = tmp_path / "termination-log"

    result = run(workload(config), workload_env(termination_log))

    assert result.returncode == 0, result.stderr
    assert json.loads(termination_log.read_text()) == {"modelVersion": 1}
    version = version_dir(tmp_path, 1)
    assert sorted(path.name for path in version.iterdir()) == [
        "__pycache__",
        "explain",
        "labels.json",
        "model.onnx",
        "model.pt",
        "model.py",
        "model_card.json",
        "profile.json",
        "state_dict.pt",
        "transparency.html",
        "transparency.json",
    ]
    card = ModelCard.model_validate_json((version / "model_card.json").read_text())
    history = card.training.metrics.history
    assert [entry.epoch for entry in history] == [0, 1, 2]
    assert history[-1].loss < history[0].loss
    # The classes are balanced-ish (about 45/55): chance is at most 0.6.
    assert card.training.metrics.validation_metric is not None
    assert card.training.metrics.validation_metric > 0.85
    assert card.labels == ["no", "yes"]
    assert card.training.data.categories == {"plan": ["basic", "max", "pro"]}
    assert [(tensor.name, tensor.data_type, tensor.dims) for tensor in card.inputs] == [("INPUT__0", "TYPE_FP32", [5])]
    assert [(tensor.name, tensor.data_type, tensor.dims) for tensor in card.outputs] == [
        ("OUTPUT__0", "TYPE_FP32", [2])
    ]
    assert json.loads((version / "labels.json").read_text()) == {"target": "churned", "labels": ["no", "yes"]}
    profile = DataProfile.model_validate_json((version / "profile.json").read_text())
    assert profile.sha256 == card.training.data.sha256
    assert [feature.name for feature in profile.features] == ["a", "b", "c", "tenure", "plan"]
    assert profile.features[1].missing > 0
    assert profile.sample.rows == 3000
    config_pbtxt = (tmp_path / "models" / MODEL_NAME / "config.pbtxt").read_text()
    assert 'platform: "pytorch_libtorch"' in config_pbtxt
    assert "dims: [ 5 ]" in config_pbtxt


def test_a_second_run_warm_starts_from_the_latest_version_and_writes_the_next(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(1000))
    env = workload_env(tmp_path / "termination-log")
    first = write_config(tmp_path / "first.json", training_run(tmp_path, {"checkpoint": None}))
    assert run(workload(first), env).returncode == 0
    second = write_config(
        tmp_path / "second.json",
        training_run(
            tmp_path,
            {
                "model": {"initFrom": "latest"},
                "hyperparameters": {"epochs": 1, "learningRate": 0.001},
                "checkpoint": None,
            },
        ),
    )

    result = run(workload(second), env)

    assert result.returncode == 0, result.stderr
    card = ModelCard.model_validate_json((version_dir(tmp_path, 2) / "model_card.json").read_text())
    assert card.training.parent == f"{MODEL_NAME}/1"
    first_card = ModelCard.model_validate_json((version_dir(tmp_path, 1) / "model_card.json").read_text())
    # Fine-tuning starts from the trained weights: its first epoch is already as good as the end of the first run.
    assert card.training.metrics.history[0].loss < first_card.training.metrics.history[0].loss


def test_a_restart_after_the_export_does_not_export_again(tmp_path: Path) -> None:
    """A worker stopped between its export and its exit is run again by the Job: it must not train a second version."""
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(400))
    config = write_config(tmp_path / "run.json", training_run(tmp_path, {"hyperparameters": {"epochs": 1}}))
    log = tmp_path / "termination-log"
    assert run(workload(config), workload_env(log)).returncode == 0
    log.unlink()

    again = run(workload(config), workload_env(log))

    assert again.returncode == 0, again.stderr
    assert json.loads(log.read_text()) == {"modelVersion": 1}
    assert not version_dir(tmp_path, 2).exists()


def test_the_launcher_passes_a_failed_run_on(tmp_path: Path) -> None:
    """The launcher forgives torchrun's teardown only when every local worker finished: a failure stays
    one, with the workers' own code (torchrun's would be 1)."""
    config = write_config(tmp_path / "run.json", training_run(tmp_path))  # no data file written

    result = run(torchrun(config, "--standalone", "--nproc-per-node=2"), workload_env(tmp_path / "termination-log"))

    assert result.returncode == EXIT_INVALID_INPUT, result.stderr
    assert "local workers finished" not in result.stderr


def test_a_finished_pod_ends_even_if_torchrun_hangs_in_its_teardown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A torchrun that does not end (a worker hung at exit), below a launcher whose one worker finished.
    hung = subprocess.Popen(["sleep", "600"])
    monkeypatch.setenv(launch.OUTCOME_DIR_ENV, str(tmp_path))
    launch.mark(launch.Outcome.DONE)

    started = time.monotonic()
    code = launch.await_torchrun(hung, tmp_path, local_workers=1, grace=0.5)

    # Stopped once the grace was up, and the pod's part of the run counts as done.
    assert time.monotonic() - started < 10
    assert code == -signal.SIGTERM
    assert hung.poll() is not None
    assert launch.pod_exit_code(code, [launch.Outcome.DONE], 1, None) == 0
