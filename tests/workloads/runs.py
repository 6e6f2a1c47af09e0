"""Building blocks for the workload tests: small synthetic data sets, TrainingRun configs, runs of the workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from scaleml_api.runtime import TERMINATION_LOG_ENV
from scaleml_api.v1alpha1.pods import TORCHRUN_ENV
from tests.support.manifests import merged

PYTHON = sys.executable
MODEL_NAME = "churn"


def churn_table(rows: int, seed: int = 0, *, missing: float = 0.0) -> pa.Table:
    """A tabular binary problem: three numbers, an integer, a string category; labels "no"/"yes".

    `missing` is the fraction of the column `b` set to null.
    """
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, rows))
    tenure = rng.integers(0, 60, size=rows)
    plan = rng.choice(["basic", "max", "pro"], size=rows)
    score = 1.5 * a - b + 0.8 * (plan == "pro") - 0.02 * tenure + 0.3 * rng.normal(size=rows)
    churned = np.where(score > -0.2, "yes", "no")
    b_values = pa.array(b, mask=rng.random(rows) < missing)
    return pa.table({"a": a, "b": b_values, "c": c, "tenure": tenure, "plan": plan, "churned": churned})


def write_parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def training_run(root: Path, spec: Mapping[str, Any] | None = None, **run: Any) -> dict[str, Any]:
    """A TrainingRun (wire form) whose volumes are directories under `root`, merged with `spec` and `run`.

    As in `merged`, a None value removes a key: `{"checkpoint": None}` turns checkpoints off.
    """
    base_spec = {
        "data": {"source": "train.parquet", "volumeClaim": "datasets", "target": "churned"},
        "model": {"architecture": "mlp"},
        "hyperparameters": {"epochs": 3, "batchSize": 64, "learningRate": 0.01, "seed": 7},
        "checkpoint": {"volumeClaim": "checkpoints", "everySteps": 20, "keep": 2},
        "output": {"volumeClaim": "models", "modelName": MODEL_NAME, "formats": ["torchscript"]},
    }
    base = {
        "namespace": "ml",
        "name": "churn",
        "spec": merged(base_spec, dict(spec or {})),
        "dataDir": str(root / "data"),
        "checkpointDir": str(root / "checkpoints"),
        "outputDir": str(root / "models"),
        "metricsPort": 0,
        "reportStatus": False,
    }
    return merged(base, run)


def write_config(path: Path, run: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))
    return path


def workload_env(termination_log: Path, **extra: str) -> dict[str, str]:
    """The environment of a training pod as the operator sets it (TORCHRUN_ENV), the termination log redirected."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "MASTER_ADDR")}
    return {**env, TERMINATION_LOG_ENV: str(termination_log), **TORCHRUN_ENV, **extra}


def workload(config: Path, *args: str) -> list[str]:
    """The command of one worker run outside torchrun."""
    return [PYTHON, "-m", "scaleml_workloads.training", "--config", str(config), *args]


def torchrun(config: Path, *options: str) -> list[str]:
    """The command of a torchrun agent starting the workload, through the launcher pods use."""
    return [
        PYTHON,
        "-m",
        "scaleml_workloads.training.launch",
        *options,
        "-m",
        "scaleml_workloads.training",
        "--config",
        str(config),
    ]


def run(command: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def export_churn_model(
    root: Path, config_name: str, *, rows: int = 2000, data_seed: int = 0, **hyperparameters: Any
) -> Path:
    """Trains the churn model on `rows` rows without checkpoints, exporting a version; returns its model directory.

    The data, config and repository go under `root` (the data seeded with `data_seed`, the config
    named `config_name`), as a training pod's volumes would hold them.
    """
    write_parquet(root / "data" / "train.parquet", churn_table(rows, seed=data_seed))
    config = write_config(
        root / config_name, training_run(root, {"checkpoint": None, "hyperparameters": hyperparameters})
    )
    result = run(workload(config), workload_env(root / "termination-log"))
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "models" / MODEL_NAME


def version_dir(root: Path, version: int, model_name: str = MODEL_NAME) -> Path:
    return root / "models" / model_name / str(version)


def card(root: Path, version: int = 1) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((version_dir(root, version) / "model_card.json").read_text())
    return loaded


def write_images(path: Path, rows: int, channels: int, seed: int = 0) -> Path:
    """8x8 images whose class is the side (left or right) of a bright square; `label` is 0 or 1."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 0.3, size=(rows, channels, 8, 8)).astype(np.float32)
    label = rng.integers(0, 2, size=rows)
    for row, side in enumerate(label):
        images[row, :, 2:6, side * 4 : side * 4 + 3] += 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=images, label=label)
    return path


def write_tokens(path: Path, rows: int, seed: int = 0) -> Path:
    """Sequences of 12 token ids in [0, 20); the class says whether token 3 occurs."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 20, size=(rows, 12))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, tokens=tokens, label=(tokens == 3).any(axis=1).astype(np.int64))
    return path


def write_sequences(path: Path, rows: int, seed: int = 0) -> Path:
    """Sequences of 6 steps of 3 features; the regression target is their sum."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(rows, 6, 3)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, steps=steps, total=steps.sum(axis=(1, 2)))
    return path
