"""The exported versions: every architecture's TorchScript and ONNX files compute what the trained model computes."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime  # type: ignore[import-untyped]
import pytest
import torch

from scaleml_api.runtime import TrainingRun
from scaleml_workloads.export.repository import versions
from scaleml_workloads.training.data import load_run_data
from scaleml_workloads.training.distributed import Topology
from scaleml_workloads.training.job import export_result
from scaleml_workloads.training.loop import train
from scaleml_workloads.training.report import ProgressReporter
from tests.workloads.export_race import COMPLETE_VERSION, COPIES_PER_PROCESS, EXPORTS_PER_PROCESS
from tests.workloads.runs import (
    MODEL_NAME,
    PYTHON,
    churn_table,
    training_run,
    version_dir,
    write_images,
    write_parquet,
    write_sequences,
    write_tokens,
)

pytestmark = pytest.mark.workloads

SMALL_TRANSFORMER = {"dModel": 16, "heads": 2, "layers": 1, "dimFeedforward": 32}


@dataclass(frozen=True)
class Case:
    id: str
    write: Callable[[Path], Path]
    spec: dict[str, Any]


def _npz(target: str, model: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"source": "train.npz", "format": "npz", "target": target}, "model": model}


CASES = [
    Case(
        "mlp-table-with-missing-values",
        lambda data: write_parquet(data / "train.parquet", churn_table(600, missing=0.1)),
        {"data": {"checks": {"maxMissingFraction": 0.2}}, "model": {"params": {"batchNorm": True, "dropout": 0.1}}},
    ),
    Case(
        "mlp-regression",
        lambda data: write_parquet(data / "train.parquet", churn_table(600)),
        {"data": {"target": "tenure"}, "model": {"task": "regression"}},
    ),
    Case(
        "cnn",
        lambda data: write_images(data / "train.npz", 200, channels=1),
        _npz("label", {"architecture": "cnn", "params": {"channels": [4, 8]}}),
    ),
    Case(
        "resnet",
        lambda data: write_images(data / "train.npz", 200, channels=3),
        _npz("label", {"architecture": "resnet", "params": {"blocks": [1, 1], "width": 8}}),
    ),
    Case(
        "transformer-over-tokens",
        lambda data: write_tokens(data / "train.npz", 300),
        _npz(
            "label",
            {"architecture": "transformer", "params": {**SMALL_TRANSFORMER, "vocabSize": 20, "maxSequenceLength": 12}},
        ),
    ),
    Case(
        "transformer-over-sequences",
        lambda data: write_sequences(data / "train.npz", 300),
        _npz("total", {"architecture": "transformer", "task": "regression", "params": SMALL_TRANSFORMER}),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_exported_formats_compute_what_the_trained_model_computes(
    tmp_path: Path, process_group: Topology, case: Case
) -> None:
    case.write(tmp_path / "data")
    spec = {**case.spec, "hyperparameters": {"epochs": 1}, "output": {"formats": ["torchscript", "onnx"]}}
    run = TrainingRun.model_validate(training_run(tmp_path, {**spec, "checkpoint": None}))
    data = load_run_data(run)
    result = train(run, data, process_group, ProgressReporter(None, leader=True, metrics_port=0))

    version, _ = export_result(run, data, result, process_group)

    # Rows the export did not trace with, in a batch of another size; the table has missing values.
    inputs = torch.from_numpy(data.features[-20:])
    with torch.no_grad():
        expected = result.model.eval()(inputs)
        scripted = torch.jit.load(str(version_dir(tmp_path, version) / "model.pt"))(inputs)  # type: ignore[no-untyped-call]
    session = onnxruntime.InferenceSession(str(version_dir(tmp_path, version) / "model.onnx"))
    (from_onnx,) = session.run(["OUTPUT__0"], {"INPUT__0": inputs.numpy()})
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(scripted, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_onnx, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_concurrent_exports_claim_distinct_versions_and_never_show_a_partial_one(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(200))
    model_dir = tmp_path / "models" / MODEL_NAME
    partial: list[tuple[str, list[str]]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for version in versions(model_dir):
                try:
                    files = sorted(path.name for path in (model_dir / str(version)).iterdir())
                except FileNotFoundError:
                    continue
                if files != COMPLETE_VERSION:
                    partial.append((str(version), files))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        exporters = [
            subprocess.Popen([PYTHON, "-m", "tests.workloads.export_race", str(tmp_path), "2"]) for _ in range(2)
        ]
        codes = [exporter.wait(timeout=120) for exporter in exporters]
    finally:
        done.set()
        watcher.join()

    assert codes == [0, 0]
    assert partial == []
    assert versions(model_dir) == list(range(1, 2 * (EXPORTS_PER_PROCESS + COPIES_PER_PROCESS) + 1))
    assert sorted(path.name for path in model_dir.iterdir() if not path.name.isdigit()) == ["config.pbtxt"]
