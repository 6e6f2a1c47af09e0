"""A trained version's evaluation: in its model card and status summary, audit-only columns, earlier versions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pytest
import torch

from scaleml_api.card import ModelCard
from scaleml_api.runtime import TrainingRun
from scaleml_workloads.training.data import load_run_data, split_rows
from scaleml_workloads.training.distributed import Topology
from scaleml_workloads.training.evaluation import task_metrics
from scaleml_workloads.training.job import export_result
from scaleml_workloads.training.loop import train
from scaleml_workloads.training.report import ProgressReporter
from tests.workloads.runs import churn_table, training_run, version_dir, write_parquet

pytestmark = pytest.mark.workloads


def _with_region(rows: int) -> pa.Table:
    """The churn table and a region column that is not a feature: derived from `c`, which the label ignores."""
    table = churn_table(rows)
    c = table.column("c").to_numpy()
    return table.append_column("region", pa.array(np.where(c > 0.5, "east", np.where(c < -1.5, "islands", "west"))))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_versions_carry_their_audit_and_the_previous_version_on_the_same_rows(
    tmp_path: Path, process_group: Topology
) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", _with_region(1500))
    evaluation = {"sensitiveFeatures": ["region"], "minGroupSize": 100, "bootstrapSamples": 50, "intendedUse": "demo"}
    exported = []
    for epochs in (1, 3):
        spec = {"hyperparameters": {"epochs": epochs}, "evaluation": evaluation, "checkpoint": None}
        run = TrainingRun.model_validate(training_run(tmp_path, spec))
        data = load_run_data(run)
        result = train(run, data, process_group, ProgressReporter(None, leader=True, metrics_port=0))
        exported.append(export_result(run, data, result, process_group))

    (first, first_summary), (second, summary) = exported
    assert (first, second) == (1, 2)
    card = ModelCard.model_validate(json.loads((version_dir(tmp_path, 2) / "model_card.json").read_text()))
    # The audit-only column was read for the groups, never fed to the model.
    assert "region" not in card.training.data.features
    assert card.intended_use == "demo"
    assert card.evaluation is not None
    (audit,) = card.evaluation.fairness
    sizes = {group.group: group.rows for group in audit.groups}
    assert sum(sizes.values()) == card.training.data.validation_rows
    assert audit.small_groups == [group for group, rows in sizes.items() if rows < 100]
    assert audit.small_groups, "the islands group is meant to be too small to judge"
    assert card.evaluation.metrics["accuracy"] == pytest.approx(card.training.metrics.validation_metric, abs=1e-6)

    # The status summary is the card's, without the per-group detail.
    assert summary is not None
    assert first_summary is not None
    assert summary.metrics == card.evaluation.metrics
    assert summary.fairness[0].demographic_parity_difference == audit.demographic_parity_difference
    assert summary.fairness[0].small_groups == len(audit.small_groups)
    assert first_summary.baselines == []

    # Version 1, run as exported on version 2's validation rows.
    (baseline,) = summary.baselines
    assert baseline.version == 1
    _, held_out = split_rows(data.rows, run.spec.data.validation_split, run.spec.hyperparameters.seed)
    model = torch.jit.load(str(version_dir(tmp_path, 1) / "model.pt"))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        outputs = model(torch.from_numpy(data.features[held_out])).numpy()
    expected = task_metrics("classification", data.target[held_out], outputs, data.labels, "")
    assert baseline.metrics == pytest.approx(expected, abs=1e-6)
    assert baseline.metrics != summary.metrics

    # The explanations' baseline is the mean training row.
    train_rows, _ = split_rows(data.rows, run.spec.data.validation_split, run.spec.hyperparameters.seed)
    explainer = torch.jit.load(str(version_dir(tmp_path, 2) / "explain" / "model.pt"))  # type: ignore[no-untyped-call]
    expected_mean = np.nanmean(data.features[train_rows].astype(np.float64), axis=0)
    np.testing.assert_allclose(explainer.baseline[0].numpy(), expected_mean, rtol=1e-5, atol=1e-6)
    assert "explain/model.pt" in card.files


def test_an_earlier_version_with_other_inputs_is_not_compared(tmp_path: Path, process_group: Topology) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", _with_region(600))
    summaries = []
    for features in (["a", "b", "c"], ["a", "b"]):
        spec = {"hyperparameters": {"epochs": 1}, "data": {"features": features}, "checkpoint": None}
        run = TrainingRun.model_validate(training_run(tmp_path, spec))
        data = load_run_data(run)
        result = train(run, data, process_group, ProgressReporter(None, leader=True, metrics_port=0))
        summaries.append(export_result(run, data, result, process_group)[1])
    assert summaries[1] is not None
    (baseline,) = summaries[1].baselines
    assert baseline.metrics == {}
    assert baseline.note == "its features differ from this version's"
