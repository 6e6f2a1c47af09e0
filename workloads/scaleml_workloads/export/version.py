"""Writing a trained model as a new version of a Triton model repository."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import platform
import py_compile
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Final

import torch
from torch import nn

from scaleml_api.card import Label, ModelCard, TrainingSummary
from scaleml_api.evaluation import Evaluation
from scaleml_api.profile import DataProfile, TensorSpec, TritonDataType
from scaleml_api.repository import (
    EXPLAIN_DIR,
    LABELS_FILE,
    MODEL_CARD_FILE,
    ONNX_FILE,
    PROFILE_FILE,
    STATE_DICT_FILE,
    TORCHSCRIPT_FILE,
    TRITON_CONFIG_FILE,
    TRITON_PYTHON_MODEL_FILE,
)
from scaleml_api.runtime import Lineage
from scaleml_api.v1alpha1.trainingjob import ExportFormat
from scaleml_workloads.export.explain import save_explainer
from scaleml_workloads.export.formats import INPUT_NAME, OUTPUT_NAME, save_onnx, save_torchscript
from scaleml_workloads.export.repository import publish, staging_dir, versions, write_once
from scaleml_workloads.export.transparency import REPORT_HTML, REPORT_JSON, render, report_json
from scaleml_workloads.serving.config import ModelConfig

log = logging.getLogger(__name__)

# Not imported: it runs only inside Triton's Python stub.
PYTHON_BACKEND_MODEL: Final = resources.files("scaleml_workloads.serving") / "torchscript_model.py"

_TRITON_TYPES: dict[torch.dtype, TritonDataType] = {torch.float32: "TYPE_FP32", torch.int64: "TYPE_INT64"}


def export_version(
    root: Path,
    model_name: str,
    model: nn.Module,
    example: torch.Tensor,
    *,
    formats: Sequence[ExportFormat],
    training: TrainingSummary,
    labels: Sequence[Label],
    profile: DataProfile,
    evaluation: Evaluation | None = None,
    intended_use: str = "",
    baseline: torch.Tensor | None = None,
    lineage: Lineage | None = None,
) -> int:
    """Write `model` as version N = highest + 1 of `<root>/<model_name>/` and return N.

    `example` is a batch of real inputs (at least two rows): it fixes the traced graph and the
    tensor shapes of the Triton config. The directory holds the formats asked for, the state dict
    (for initFrom), labels.json, model_card.json and profile.json, and appears complete or not at
    all. `<root>/<model_name>/config.pbtxt` is written only when there is none.
    """
    started = time.monotonic()
    model = copy.deepcopy(model).cpu().eval()
    example = example.cpu()
    with torch.no_grad():
        output = model(example)
    inputs = [tensor_spec(INPUT_NAME, example)]
    outputs = [tensor_spec(OUTPUT_NAME, output)]
    model_dir = root / model_name
    staging = staging_dir(model_dir)
    try:
        if "torchscript" in formats:
            save_torchscript(model, example, staging / TORCHSCRIPT_FILE)
            # Servable by Triton's python backend too, where the libtorch backend is missing.
            _write_python_backend_model(staging / TRITON_PYTHON_MODEL_FILE)
            # Token ids have no path between them to integrate along: no explanation model.
            if baseline is not None and example.is_floating_point():
                explain = staging / EXPLAIN_DIR
                explain.mkdir()
                save_explainer(
                    model, example, baseline.cpu(), training.task == "classification", explain / TORCHSCRIPT_FILE
                )
                _write_python_backend_model(explain / TRITON_PYTHON_MODEL_FILE)
        if "onnx" in formats:
            save_onnx(model, example, staging / ONNX_FILE)
        torch.save(model.state_dict(), staging / STATE_DICT_FILE)
        (staging / LABELS_FILE).write_text(json.dumps({"target": training.data.target, "labels": list(labels)}))
        (staging / PROFILE_FILE).write_text(profile.model_dump_json(by_alias=True))
        written = [str(entry.relative_to(staging)) for entry in staging.rglob("*") if entry.is_file()]
        files = sorted([*written, MODEL_CARD_FILE, REPORT_HTML, REPORT_JSON])
        present = versions(model_dir)
        card = ModelCard(
            model_name=model_name,
            created=datetime.now(UTC),
            training=training,
            labels=list(labels),
            inputs=inputs,
            outputs=outputs,
            output_kind="logits" if training.task == "classification" else "value",
            files=files,
            export_seconds=round(time.monotonic() - started, 3),
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            intended_use=intended_use,
            evaluation=evaluation,
            lineage=lineage,
            previous_version=present[-1] if present else None,
        )
        (staging / MODEL_CARD_FILE).write_text(card.model_dump_json(by_alias=True, indent=2))
        default_config = ModelConfig(name=model_name, backend="pytorch", inputs=inputs, outputs=outputs)
        if "torchscript" in formats and write_once(model_dir / TRITON_CONFIG_FILE, default_config.render()):
            log.info("wrote %s", model_dir / TRITON_CONFIG_FILE)
        version = publish(staging, lambda directory, number: _write_report(directory, card, number))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s version %d (%s) in %.1f s", model_name, version, ", ".join(files), time.monotonic() - started)
    return version


def _write_report(directory: Path, card: ModelCard, version: int) -> list[Path]:
    (directory / REPORT_HTML).write_text(render(card, version))
    (directory / REPORT_JSON).write_text(report_json(card, version))
    return [directory / REPORT_HTML, directory / REPORT_JSON]


def _write_python_backend_model(path: Path) -> None:
    path.write_bytes(PYTHON_BACKEND_MODEL.read_bytes())
    # Compiled now: Triton's stub would otherwise write __pycache__ into the version directory on
    # its first load, and Triton in poll mode takes that change for a new model and reloads it.
    # (A stub of another Python version cannot use it, but in a pod the volume is read-only.)
    py_compile.compile(str(path), cfile=importlib.util.cache_from_source(str(path)), doraise=True)


def tensor_spec(name: str, batch: torch.Tensor) -> TensorSpec:
    data_type = _TRITON_TYPES.get(batch.dtype)
    if data_type is None:
        raise TypeError(f"{name} has dtype {batch.dtype}; the export supports {', '.join(map(str, _TRITON_TYPES))}")
    return TensorSpec(name=name, data_type=data_type, dims=list(batch.shape[1:]))
