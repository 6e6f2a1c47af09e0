"""The transparency report of an exported version, as a headless browser renders it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pytest
from PIL import Image

from scaleml_api.card import ModelCard
from scaleml_api.runtime import Lineage, TrainingRun
from scaleml_workloads.export.transparency import BAR_COLOUR, REPORT_HTML, REPORT_JSON, SECTIONS
from scaleml_workloads.training.data import load_run_data
from scaleml_workloads.training.distributed import Topology
from scaleml_workloads.training.job import export_result
from scaleml_workloads.training.loop import train
from scaleml_workloads.training.report import ProgressReporter
from tests.support.browser import render
from tests.workloads.runs import churn_table, training_run, version_dir, write_parquet

pytestmark = pytest.mark.workloads

INTENDED_USE = "Ranks customers for retention offers <b>not</b> for pricing."


def test_the_report_renders_every_section_in_chromium(tmp_path: Path, process_group: Topology) -> None:
    table = churn_table(1200)
    c = table.column("c").to_numpy()
    table = table.append_column("region", pa.array(np.where(c > 0, "north", np.where(c < -1.8, "isles", "south"))))
    write_parquet(tmp_path / "data" / "train.parquet", table)
    evaluation = {"sensitiveFeatures": ["region"], "intendedUse": INTENDED_USE, "bootstrapSamples": 50}
    for epochs in (1, 2):
        spec = {"hyperparameters": {"epochs": epochs}, "evaluation": evaluation, "checkpoint": None}
        run = TrainingRun.model_validate(training_run(tmp_path, spec, name=f"churn-{epochs}"))
        if epochs == 2:
            lineage = Lineage(
                retrained_by="churn-drift", retrain_of="churn-1", since="2026-12-05T03:00:00Z", rule="drift"
            )
            run = run.model_copy(update={"lineage": lineage})
        data = load_run_data(run)
        result = train(run, data, process_group, ProgressReporter(None, leader=True, metrics_port=0))
        export_result(run, data, result, process_group)

    directory = version_dir(tmp_path, 2)
    behind = json.loads((directory / REPORT_JSON).read_text())
    card = ModelCard.model_validate(json.loads((directory / "model_card.json").read_text()))
    assert behind["version"] == 2
    assert ModelCard.model_validate(behind["modelCard"]) == card
    assert {REPORT_HTML, REPORT_JSON} <= set(card.files)

    dom, screenshot = render(directory / REPORT_HTML, tmp_path, "1200,3200")

    for section in SECTIONS:
        assert f'<section id="{section}">' in dom
    # Text from the spec is shown as text, never as markup.
    assert "Ranks customers for retention offers &lt;b&gt;not&lt;/b&gt; for pricing." in dom
    assert card.training.data.sha256 in dom
    assert "DriftMonitor churn-drift retrained churn-1: drift persisted since 2026-12-05T03:00:00Z" in dom
    assert "version 1" in dom  # what it replaces, and the earlier version compared on the same rows
    assert card.evaluation is not None
    (audit,) = card.evaluation.fairness
    for group in audit.groups:
        assert f"<td>{group.group}</td><td>{group.rows}</td>" in dom
    assert "isles" in audit.small_groups
    assert dom.count("<svg") == 1
    # One bar per feature in the attributions chart, painted.
    assert dom.count(f'fill="{BAR_COLOUR}"') == len(card.training.metrics.feature_importance)
    image = Image.open(screenshot).convert("RGB")
    colours = Counter(image.get_flattened_data())
    assert colours[(0x48, 0x78, 0xA8)] > 1000
