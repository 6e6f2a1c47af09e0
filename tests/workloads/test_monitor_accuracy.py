"""The monitor's estimated accuracy on the real churn model's captured answers, against their true accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pytest
import torch
from prometheus_client import REGISTRY

from scaleml_api.profile import DataProfile
from scaleml_api.runtime import MonitorRun
from scaleml_workloads.drift.detector import DriftDetector
from scaleml_workloads.monitor.accuracy import AccuracyEstimator
from scaleml_workloads.monitor.loop import LATEST_REPORT, Monitor, Reporter
from tests.support.manifests import example, merged
from tests.workloads.monitoring import model_inputs, write_window
from tests.workloads.runs import churn_table

pytestmark = pytest.mark.workloads

WINDOW = 1000
# How far the estimate may be from the true accuracy of a window of WINDOW answers of the churn model
# on traffic like its training data: the window's sampling error (about 0.01) plus what the
# calibration on 200 validation rows leaves.
BOUND = 0.04


def _run(exported_model: Path, root: Path) -> MonitorRun:
    return MonitorRun.model_validate(
        {
            "namespace": "ml",
            "name": "churn",
            "spec": merged(
                example("DriftMonitor")["spec"],
                {"window": {"size": WINDOW, "every": "10s"}, "thresholds": {"accuracyDrop": 0.05}},
            ),
            "profilePath": str(exported_model / "1" / "profile.json"),
            "modelVersion": 1,
            "capturesDir": str(root / "captures"),
            "reportsDir": str(root / "reports"),
            "statusFile": str(root / "status.json"),
            "metricsPort": 0,
            "reportPort": 0,
            "reportStatus": True,
        }
    )


def _answers(
    exported_model: Path, profile: DataProfile, table: pa.Table
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float]:
    """The model's inputs for `table`, the served model's logits for them, and the accuracy of its answers."""
    inputs = model_inputs(profile, table)
    model = torch.jit.load(str(exported_model / "1" / "model.pt"))  # type: ignore[no-untyped-call]
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).numpy()
    truth = (np.asarray(table.column("churned").to_pylist()) == "yes").astype(np.int64)
    return inputs, logits, float((logits.argmax(axis=1) == truth).mean())


def _near_the_boundary(rows: int) -> pa.Table:
    """Churn rows whose score is close to the threshold: traffic the model is unsure of, and often wrong on."""
    table = churn_table(20 * rows, seed=70)
    # churn_table's score without its noise.
    a, b = table.column("a").to_numpy(), table.column("b").to_numpy()
    pro = pc.equal(table.column("plan"), "pro").to_numpy(zero_copy_only=False)
    score = 1.5 * a - b + 0.8 * pro - 0.02 * table.column("tenure").to_numpy()
    hard = np.flatnonzero(np.abs(score + 0.2) < 0.25)[:rows]
    return table.take(pa.array(hard))


def test_the_estimate_tracks_the_true_accuracy_and_a_drop_degrades_the_window(
    exported_model: Path, tmp_path: Path
) -> None:
    run = _run(exported_model, tmp_path)
    profile = DataProfile.model_validate_json(Path(run.profile_path).read_text())
    assert profile.calibration is not None
    detector = DriftDetector.from_profile(profile, run.spec.tests, run.spec.thresholds, run.spec.features)
    reporter = Reporter.for_run(run)
    monitor = Monitor(run, detector, reporter, accuracy=AccuracyEstimator.from_profile(profile))
    status_file = Path(run.status_file or "")

    inputs, logits, calm_accuracy = _answers(exported_model, profile, churn_table(WINDOW, seed=60))
    write_window(Path(run.captures_dir), inputs, start=100.0, outputs=logits)
    monitor.check()
    calm = json.loads(status_file.read_text())

    hard_inputs, hard_logits, hard_accuracy = _answers(exported_model, profile, _near_the_boundary(WINDOW))
    write_window(Path(run.captures_dir), hard_inputs, start=200.0, outputs=hard_logits)
    monitor.check()
    reporter.close()
    hard = json.loads(status_file.read_text())

    print(f"calm: estimated {calm['estimatedAccuracy']:.3f}, true {calm_accuracy:.3f}")
    print(f"near the boundary: estimated {hard['estimatedAccuracy']:.3f}, true {hard_accuracy:.3f}")
    assert calm["validationAccuracy"] == pytest.approx(profile.calibration.validation_accuracy, abs=1e-6)
    assert abs(calm["estimatedAccuracy"] - calm_accuracy) < BOUND
    assert calm["degraded"] is False
    assert calm["consecutiveDegradedWindows"] == 0
    assert "accuracyEstimateMessage" not in calm
    # The hard traffic costs the model accuracy, and the estimate sees it without a label.
    assert hard_accuracy < calm_accuracy - 0.1
    assert abs(hard["estimatedAccuracy"] - hard_accuracy) < 2 * BOUND
    assert hard["degraded"] is True
    assert hard["consecutiveDegradedWindows"] == 1
    assert hard["degradedSince"]
    assert REGISTRY.get_sample_value("scaleml_drift_estimated_accuracy") == pytest.approx(hard["estimatedAccuracy"])
    assert REGISTRY.get_sample_value("scaleml_drift_accuracy_degraded") == 1
    page = (Path(run.reports_dir) / LATEST_REPORT).read_text()
    assert f"<b>{hard['estimatedAccuracy']:.3f}</b>" in page
    assert f"validation accuracy {profile.calibration.validation_accuracy:.3g}" in page


def test_a_profile_without_calibration_gives_no_estimate_and_says_why(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path)
    profile = DataProfile.model_validate_json(Path(run.profile_path).read_text())
    older = profile.model_copy(update={"calibration": None})
    detector = DriftDetector.from_profile(older, run.spec.tests, run.spec.thresholds, run.spec.features)
    reporter = Reporter.for_run(run)
    monitor = Monitor(run, detector, reporter, accuracy=AccuracyEstimator.from_profile(older))
    inputs, logits, _ = _answers(exported_model, profile, churn_table(WINDOW, seed=61))
    write_window(Path(run.captures_dir), inputs, start=100.0, outputs=logits)

    assert monitor.check() is not None
    reporter.close()

    status = json.loads(Path(run.status_file or "").read_text())
    assert "estimatedAccuracy" not in status
    assert "no calibration" in status["accuracyEstimateMessage"]
    assert status["degraded"] is False
    assert "Estimated accuracy: n/a" in (Path(run.reports_dir) / LATEST_REPORT).read_text()
