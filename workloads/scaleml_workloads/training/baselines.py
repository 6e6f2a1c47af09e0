"""Earlier versions of the model, run on the new version's validation rows, for the maxRegression gate.

A ModelDeployment's gate compares the version it serves with the new one on the same rows: the
new version's validation split, which the earlier model may have trained on (it came from another
run), so the comparison favours the earlier model if anything. Only a version that takes the same
input can be compared: the same features, categories and labels, recorded in its model card. Its
TorchScript runs as exported; a version that cannot be compared says why in its `note`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from scaleml_api.card import ModelCard
from scaleml_api.evaluation import MAX_TEXT, Baseline
from scaleml_api.repository import MODEL_CARD_FILE, TORCHSCRIPT_FILE
from scaleml_workloads.export.repository import versions
from scaleml_workloads.training.data import TrainingData
from scaleml_workloads.training.evaluation import task_metrics
from scaleml_workloads.training.inference import predict


def _incompatible(card: ModelCard, data: TrainingData) -> str:
    """Why an earlier version cannot take this data's inputs, or ""."""
    summary = card.training.data
    if card.training.task != ("classification" if data.labels else "regression"):
        return f"it was trained for {card.training.task}"
    if tuple(summary.features) != data.feature_names:
        return "its features differ from this version's"
    if {name: tuple(values) for name, values in summary.categories.items()} != dict(data.categories):
        return "its categories differ from this version's, so the codes mean other values"
    if tuple(card.labels) != data.labels:
        return "its labels differ from this version's"
    return ""


def baseline(
    version_dir: Path,
    data: TrainingData,
    rows: npt.NDArray[np.int64],
    positive_label: str,
    device: torch.device,
) -> Baseline:
    """The task metrics of the version in `version_dir` on `rows` of `data`, or why there are none."""
    version = int(version_dir.name)
    try:
        card = ModelCard.model_validate(json.loads((version_dir / MODEL_CARD_FILE).read_text()))
    except (OSError, ValueError) as error:
        return Baseline(version=version, note=f"its model card cannot be read: {error}"[:MAX_TEXT])
    if problem := _incompatible(card, data):
        return Baseline(version=version, note=problem)
    if not (version_dir / TORCHSCRIPT_FILE).is_file():
        return Baseline(version=version, note=f"it has no {TORCHSCRIPT_FILE} to run")
    try:
        with warnings.catch_warnings():
            # Deprecated in torch 2.9+, and still the way to run what Triton's libtorch backend runs.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+.* is deprecated")
            model = torch.jit.load(str(version_dir / TORCHSCRIPT_FILE), map_location=device)  # type: ignore[no-untyped-call]
        outputs = predict(model, torch.from_numpy(data.features[rows]), device).numpy()
    except (OSError, RuntimeError) as error:
        return Baseline(version=version, note=f"it did not run: {error}"[:MAX_TEXT])
    metrics = task_metrics(card.training.task, data.target[rows], outputs, data.labels, positive_label)
    return Baseline(version=version, metrics=metrics)


def baselines(
    model_dir: Path,
    count: int,
    data: TrainingData,
    rows: npt.NDArray[np.int64],
    positive_label: str,
    device: torch.device,
) -> list[Baseline]:
    """The newest `count` versions of `model_dir`, each evaluated on `rows`, newest first."""
    if count == 0 or not len(rows):
        return []
    newest = versions(model_dir)[::-1][:count]
    return [baseline(model_dir / str(version), data, rows, positive_label, device) for version in newest]
