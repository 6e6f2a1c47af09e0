"""The drift monitor on real capture files and a real training profile, reporting to a real API server."""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from scaleml_api.profile import DataProfile, DataSample, TensorSpec
from scaleml_api.runtime import CAPTURE_DIR, CONFIG_ENV, TERMINATION_LOG_ENV, MonitorRun
from scaleml_api.v1alpha1 import driftmonitor as monitoring
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import driftmonitor as build
from scaleml_operator.builders.meta import Owner
from scaleml_workloads.capture.files import file_name
from scaleml_workloads.drift import comparison
from scaleml_workloads.drift.detector import DriftDetector
from scaleml_workloads.kubeapi import InClusterClient, StatusPatcher
from scaleml_workloads.monitor import metrics
from scaleml_workloads.monitor.loop import LATEST_REPORT, Monitor, Reporter
from scaleml_workloads.monitor.reference import AGGREGATES_ONLY, MULTIVARIATE_SKIPPED, detector_for
from scaleml_workloads.training.data import load_data
from scaleml_workloads.training.profile import profile_data
from tests.support.browser import render
from tests.support.controlplane import ControlPlane
from tests.support.fixtures import NamespaceFactory
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for
from tests.workloads.monitoring import model_inputs, write_window
from tests.workloads.runs import churn_table, training_run, write_parquet

pytestmark = pytest.mark.workloads

WINDOW = 1000


def _run(exported_model: Path, root: Path, **spec: Any) -> MonitorRun:
    return MonitorRun.model_validate(
        {
            "namespace": "ml",
            "name": "churn",
            "spec": merged(example("DriftMonitor")["spec"], {"window": {"size": WINDOW, "every": "10s"}, **spec}),
            "profilePath": str(exported_model / "1" / "profile.json"),
            "modelVersion": 1,
            "capturesDir": str(root / "captures"),
            "reportsDir": str(root / "reports"),
            "metricsPort": 0,
            "reportPort": 0,
            "reportStatus": False,
        }
    )


def _profile(run: MonitorRun) -> DataProfile:
    return DataProfile.model_validate_json(Path(run.profile_path).read_text())


def _shifted(table: pa.Table, column: str, by: float) -> pa.Table:
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pc.add(table.column(column), by))


def _monitor(run: MonitorRun, reporter: Reporter | None = None, start: datetime | None = None) -> Monitor:
    profile = _profile(run)
    detector = DriftDetector.from_profile(profile, run.spec.tests, run.spec.thresholds, run.spec.features)
    moments = iter(start + timedelta(minutes=minute) for minute in range(1000)) if start else None
    clock = (lambda: next(moments)) if moments else (lambda: datetime.now(UTC))
    return Monitor(run, detector, reporter or Reporter(run), clock=clock)


def test_the_same_traffic_does_not_drift_and_a_shift_does(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path)
    profile = _profile(run)
    monitor = _monitor(run)
    captures = Path(run.captures_dir)

    assert monitor.check() is None  # nothing captured yet
    write_window(captures, model_inputs(profile, churn_table(WINDOW, seed=21)), start=1000.0)
    calm = monitor.check()
    assert calm is not None
    assert not calm.drift_detected, calm.drifted_features
    assert monitor.check() is None  # the same rows are not tested twice

    write_window(captures, model_inputs(profile, _shifted(churn_table(WINDOW, seed=22), "a", 1.5)), start=2000.0)
    shifted = monitor.check()

    assert shifted is not None
    assert "a" in shifted.drifted_features
    assert shifted.score > calm.score
    assert shifted.rows == WINDOW
    assert monitor.episode.consecutive == (1 if shifted.drift_detected else 0)
    sample = REGISTRY.get_sample_value("scaleml_drift_feature_drifted", {"feature": "a"})
    assert sample == 1.0
    report = (Path(run.reports_dir) / LATEST_REPORT).read_text()
    assert report.count("<figure") == len(profile.features)
    assert "reference (training data)" in report


def test_a_series_of_a_test_that_no_longer_decides_is_removed() -> None:
    rng = np.random.default_rng(11)
    detector, _ = comparison.detector_for(
        {"age": rng.normal(size=2000), "income": rng.normal(size=2000)}, (), monitoring.Tests(), monitoring.Thresholds()
    )
    many_missing = {"age": np.r_[rng.normal(size=700), np.full(300, np.nan)], "income": rng.normal(size=1000)}
    first = detector.check_table(many_missing)
    metrics.record(first, 1)
    assert [feature.test for feature in first.features if feature.name == "age"] == ["missing"]

    second = detector.check_table({"age": rng.normal(size=1000), "income": rng.normal(size=1000)})
    metrics.record(second, 0)

    assert not second.drift_detected
    for name in ("scaleml_drift_statistic", "scaleml_drift_p_value", "scaleml_drift_q_value"):
        assert REGISTRY.get_sample_value(name, {"feature": "age", "test": "missing"}) is None, name
        assert REGISTRY.get_sample_value(name, {"feature": "age", "test": "ks"}) is not None, name
    assert REGISTRY.get_sample_value("scaleml_drift_feature_drifted", {"feature": "age"}) == 0.0


def test_a_window_holds_only_the_rows_the_reference_version_answered(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path)
    profile = _profile(run)
    captures = Path(run.captures_dir)
    write_window(captures, model_inputs(profile, churn_table(WINDOW, seed=31)), start=1000.0)
    # Version 2 rolls out on other traffic, which would drift against version 1's training data.
    rollout = model_inputs(profile, _shifted(churn_table(400, seed=32), "a", 1.5))
    write_window(captures, rollout, start=2000.0, model_version="2")

    result = _monitor(run).check()

    assert result is not None
    assert not result.drift_detected, result.drifted_features
    assert result.rows == WINDOW
    assert any(message.startswith("400 captured rows were left out") for message in result.messages)


def test_a_monitor_reads_its_target_s_directory_and_of_the_claim_s_root_only_its_model_s_rows(
    exported_model: Path, tmp_path: Path
) -> None:
    """churn and fraud share a capture claim; fraud's rows are newer and five columns wide (the probe's case)."""
    claim = tmp_path / "claim"
    inputs = build.Inputs("captures", "models", "churn/1/profile.json", 1, "churn")
    rendered = build.monitor_run(
        Owner("DriftMonitor", "churn", "ml", "dm-uid"), _run(exported_model, tmp_path).spec, inputs
    )
    assert rendered.legacy_captures_dir is not None

    def mounted(path: str) -> Path:
        return Path(path.replace(CAPTURE_DIR, str(claim), 1))

    run = _run(exported_model, tmp_path).model_copy(
        update={
            "captures_dir": str(mounted(rendered.captures_dir)),
            "legacy_captures_dir": str(mounted(rendered.legacy_captures_dir)),
            "model_name": rendered.model_name,
        }
    )
    profile = _profile(run)
    fraud = np.ones((300, 5), dtype=np.float32)
    # Before each ModelDeployment had a directory: churn's older rows, then fraud's, at the root.
    write_window(claim, model_inputs(profile, churn_table(WINDOW // 2, seed=41)), start=1000.0)
    write_window(claim, fraud, start=2000.0, model="fraud")
    write_window(claim / "churn", model_inputs(profile, churn_table(WINDOW // 2, seed=42)), start=3000.0)
    write_window(claim / "fraud", fraud, start=4000.0, model="fraud")

    result = _monitor(run).check()

    assert result is not None
    assert (result.rows, result.drift_detected) == (WINDOW, False), result.messages
    assert "300 captured rows were left out: another model than churn answered them" in result.messages
    assert not [message for message in result.messages if "capture files were left out" in message]


def _plans_moved(table: pa.Table) -> pa.Table:
    """The plan mix of the churn traffic changed: most customers on pro."""
    plans = ["pro" if index % 10 < 7 else "basic" for index in range(table.num_rows)]
    return table.set_column(table.schema.get_field_index("plan"), "plan", pa.array(plans))


def _new_plan(profile: DataProfile, inputs: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    """A plan code the training data never had, in a tenth of the rows."""
    plan = next(feature for feature in profile.features if feature.name == "plan")
    inputs[::10, plan.index] = 7


@pytest.mark.parametrize("case", ["plan mix", "new plan", "missing b"])
def test_one_drifted_feature_drifts_the_window_and_status_events_metrics_and_report_agree(
    exported_model: Path, tmp_path: Path, case: str
) -> None:
    run = _run(exported_model, tmp_path).model_copy(
        update={"report_status": True, "status_file": str(tmp_path / "status.json")}
    )
    profile = _profile(run)
    monitor = _monitor(run, Reporter.for_run(run))
    table = churn_table(WINDOW, seed=70, missing=0.3 if case == "missing b" else 0.0)
    inputs = model_inputs(profile, _plans_moved(table) if case == "plan mix" else table)
    if case == "new plan":
        _new_plan(profile, inputs)
    write_window(Path(run.captures_dir), inputs, start=10.0)
    result = monitor.check()
    monitor.reporter.close()

    drifted = "b" if case == "missing b" else "plan"
    assert result is not None
    assert result.drifted_features == [drifted]
    assert result.drift_detected
    status = json.loads(Path(run.status_file or "").read_text())
    assert status["driftDetected"] is True
    assert status["driftedFeatures"] == [drifted]
    assert status["verdict"] == result.verdict
    assert status["verdict"].startswith(f"drift in {drifted} ({'missing' if case == 'missing b' else 'chi2'}, q ")
    assert status["topFeatures"][0]["name"] == drifted
    assert status["driftScore"] == pytest.approx(result.score, abs=1e-6)
    assert REGISTRY.get_sample_value("scaleml_drift_detected") == 1.0
    assert REGISTRY.get_sample_value("scaleml_drift_feature_drifted", {"feature": drifted}) == 1.0
    assert REGISTRY.get_sample_value("scaleml_drift_kept_quiet", {"rule": "shareOfDriftedFeatures"}) == 0.0
    report = (Path(run.reports_dir) / LATEST_REPORT).read_text()
    assert "drift detected" in report
    assert html.escape(result.verdict) in report


def test_a_quorum_that_keeps_a_drifted_feature_quiet_says_so_everywhere(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path, thresholds={"shareOfDriftedFeatures": 0.5}).model_copy(
        update={"report_status": True, "status_file": str(tmp_path / "status.json")}
    )
    profile = _profile(run)
    monitor = _monitor(run, Reporter.for_run(run))
    write_window(Path(run.captures_dir), model_inputs(profile, _plans_moved(churn_table(WINDOW, seed=71))), 10.0)
    result = monitor.check()
    monitor.reporter.close()

    assert result is not None
    assert result.drifted_features == ["plan"]
    assert not result.drift_detected
    status = json.loads(Path(run.status_file or "").read_text())
    assert (status["driftDetected"], status["driftedFeatures"]) == (False, ["plan"])
    assert "below thresholds.shareOfDriftedFeatures 50%" in status["verdict"]
    assert REGISTRY.get_sample_value("scaleml_drift_kept_quiet", {"rule": "shareOfDriftedFeatures"}) == 1.0
    report = (Path(run.reports_dir) / LATEST_REPORT).read_text()
    assert "no drift" in report
    assert "Kept quiet by a rule" in report
    assert html.escape(status["verdict"]) in report


def test_the_monitor_process_tests_a_window_and_writes_a_report(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path)
    write_window(Path(run.captures_dir), model_inputs(_profile(run), churn_table(WINDOW, seed=5)), start=10.0)
    config = tmp_path / "run.json"
    config.write_text(run.model_dump_json(by_alias=True))

    result = subprocess.run(
        [sys.executable, "-m", "scaleml_workloads.monitor", "--config", str(config), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "window of 1000 rows" in result.stderr
    assert (Path(run.reports_dir) / LATEST_REPORT).exists()


def test_an_unreadable_profile_is_named_and_nothing_crash_loops(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path).model_copy(update={"profile_path": str(tmp_path / "missing.json")})
    termination = tmp_path / "termination-log"

    result = subprocess.run(
        [sys.executable, "-m", "scaleml_workloads.monitor", "--once"],
        env={**os.environ, CONFIG_ENV: run.model_dump_json(by_alias=True), TERMINATION_LOG_ENV: str(termination)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert "missing.json" in termination.read_text()


@pytest.mark.apiserver
def test_status_and_events_reach_the_drift_monitor_and_a_restart_resumes_the_count(
    exported_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    control_plane: ControlPlane,
    scaleml_installed: Kubectl,
    make_namespace: NamespaceFactory,
) -> None:
    kubectl = scaleml_installed
    namespace = make_namespace()
    kubectl.apply(merged(example("DriftMonitor"), {"metadata": {"namespace": namespace}}))
    uid = kubectl.get("driftmonitor", "churn", namespace)["metadata"]["uid"]
    # Exactly what the operator grants a monitor pod.
    owner = Owner("DriftMonitor", "churn", namespace, uid)
    for manifest in build.identity(owner):
        kubectl.apply(manifest)
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    credentials = tmp_path / "serviceaccount"
    credentials.mkdir()
    (credentials / "token").write_text(control_plane.request_token(namespace, "churn-monitor"))
    (credentials / "ca.crt").write_bytes(control_plane.ca_file.read_bytes())
    run = _run(exported_model, tmp_path).model_copy(update={"namespace": namespace, "report_status": True})
    profile = _profile(run)

    def reporter() -> Reporter:
        client = InClusterClient(credentials)
        return Reporter(run, StatusPatcher(namespace, "driftmonitors", "churn", credentials), client)

    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    first = reporter()
    monitor = _monitor(run, first, start)
    for window in range(2):
        inputs = model_inputs(profile, _shifted(churn_table(WINDOW, seed=30 + window), "a", 2.0))
        write_window(Path(run.captures_dir), inputs, start=100.0 * (window + 1))
        assert monitor.check() is not None
    first.close()

    # A new process (a restarted pod) continues the run of drifted windows from the status.
    second = reporter()
    restarted = _monitor(run, second, start + timedelta(hours=1))
    restarted.episode = second.resume()
    assert (restarted.episode.consecutive, restarted.episode.since) == (2, "2026-11-23T09:00:00Z")
    write_window(Path(run.captures_dir), model_inputs(profile, _shifted(churn_table(WINDOW, 40), "a", 2.0)), 300.0)
    restarted.check()
    second.close()

    status = kubectl.get("driftmonitor", "churn", namespace)["status"]
    assert status["driftDetected"] is True
    assert status["consecutiveDriftedWindows"] == 3
    assert status["driftSince"] == "2026-11-23T09:00:00Z"
    assert "a" in status["driftedFeatures"]
    assert status["windowSize"] == WINDOW
    assert 0 < status["driftScore"] <= 1
    # The verdict and what counts most pass the CRD's schema.
    assert status["verdict"].startswith("drift in a (ks, q ")
    assert status["topFeatures"][0]["name"] == "a"

    third = reporter()
    calm = _monitor(run, third, start + timedelta(hours=2))
    calm.episode = third.resume()
    # Same distribution as the training data (a seed whose window passes the 1% tests; the
    # calibration tests measure how often one does not).
    write_window(Path(run.captures_dir), model_inputs(profile, churn_table(WINDOW, seed=51)), 400.0)
    result = calm.check()
    third.close()
    assert result is not None
    assert not result.drift_detected

    status = kubectl.get("driftmonitor", "churn", namespace)["status"]
    assert status["driftDetected"] is False
    assert "driftSince" not in status
    assert status["consecutiveDriftedWindows"] == 0

    def reasons() -> list[str]:
        out = kubectl.run("get", "events", "-n", namespace, "-o", "json").stdout
        return [event["reason"] for event in json.loads(out)["items"]]

    wait_for(lambda: "DriftResolved" in reasons(), 30, "the DriftResolved Event")
    assert reasons().count("DriftDetected") == 1


def test_the_report_renders_in_chromium_with_a_plot_per_feature(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path)
    profile = _profile(run)
    monitor = _monitor(run)
    captures = Path(run.captures_dir)
    write_window(captures, model_inputs(profile, churn_table(WINDOW, seed=61)), start=10.0)
    monitor.check()
    write_window(captures, model_inputs(profile, _shifted(churn_table(WINDOW, seed=62), "a", 1.5)), start=20.0)
    assert monitor.check() is not None

    dom, screenshot = render(Path(run.reports_dir) / LATEST_REPORT, tmp_path, "1400,2400")

    # As the browser built it: one figure with one chart per feature, the trend, the table.
    assert dom.count("<figure") == len(profile.features)
    assert dom.count("<svg") == len(profile.features) + 1
    assert dom.count("<tr") == len(profile.features) + 1
    image = Image.open(screenshot).convert("RGB")
    colours = Counter(image.get_flattened_data())
    # Bars of both distributions were painted, not just laid out.
    assert colours[(0x48, 0x78, 0xA8)] > 2000
    assert colours[(0xE0, 0x82, 0x3D)] > 2000


def _skipped(reason: str) -> float:
    return REGISTRY.get_sample_value("scaleml_drift_capture_files_skipped_total", {"reason": reason}) or 0.0


def test_a_broken_capture_file_is_counted_once_and_left_out_of_every_window(
    exported_model: Path, tmp_path: Path
) -> None:
    run = _run(exported_model, tmp_path)
    profile = _profile(run)
    monitor = _monitor(run)
    captures = Path(run.captures_dir)
    write_window(captures, model_inputs(profile, churn_table(WINDOW, seed=71)), start=1000.0)
    truncated = captures / file_name(1500.0, "broken", 1, "parquet")
    truncated.write_bytes(next(captures.iterdir()).read_bytes()[:-200])
    (captures / file_name(1600.0, "broken", 2, "npz")).write_bytes(b"PK\x03\x04 not a zip")
    before = _skipped("unreadable")

    first = monitor.check()
    report = (Path(run.reports_dir) / LATEST_REPORT).read_text()
    # A window of half new rows and half old ones: the broken files are in its way again.
    write_window(captures, model_inputs(profile, churn_table(WINDOW // 2, seed=72)), start=2000.0)
    second = monitor.check()

    assert first is not None
    assert second is not None
    assert first.rows == second.rows == WINDOW
    assert _skipped("unreadable") - before == 2, "each file is counted once, however many windows skip it"
    assert "2 capture files were left out (2 unreadable)" in first.messages[-1]
    assert "2 capture files were left out (2 unreadable)" in second.messages[-1]
    assert "2 capture files were left out" in report


def test_a_window_holds_at_most_its_bytes_and_says_so(exported_model: Path, tmp_path: Path) -> None:
    run = _run(exported_model, tmp_path)
    profile = _profile(run)
    captures = Path(run.captures_dir)
    for n in range(4):
        write_window(captures, model_inputs(profile, churn_table(WINDOW // 4, seed=80 + n)), start=100.0 * (n + 1))
    # INPUT__0 and OUTPUT__0 in float32, the timestamp, and the model version "1" (a unicode character) read to keep
    # the window to the reference's version.
    row_bytes = 4 * (profile.input.dims[0] + 2) + 8 + 4
    monitor = _monitor(run)
    monitor.window_max_bytes = 2 * (WINDOW // 4) * row_bytes + 100

    result = monitor.check()

    assert result is not None
    assert result.rows == WINDOW // 2
    assert any(f"the window has {WINDOW // 2} rows, fewer than the {WINDOW} asked for" in m for m in result.messages)
    assert any("would have taken it past" in message for message in result.messages)


def test_a_profile_without_rows_still_finds_a_shift_and_skips_the_multivariate_test(
    exported_model: Path, tmp_path: Path
) -> None:
    run = _run(exported_model, tmp_path)
    profile = _profile(run)
    assert profile.sample.rows > 0
    assert run.spec.tests.multivariate == "mmd"
    aggregates = profile.model_copy(update={"sample": DataSample(seed=0, rows=0, columns={})})
    detector, notes = detector_for(aggregates, run.spec)
    monitor = Monitor(run, detector, Reporter(run), notes=notes)
    captures = Path(run.captures_dir)

    write_window(captures, model_inputs(profile, churn_table(WINDOW, seed=21)), start=1000.0)
    calm = monitor.check()
    write_window(captures, model_inputs(profile, _shifted(churn_table(WINDOW, seed=22), "a", 1.5)), start=2000.0)
    shifted = monitor.check()

    assert calm is not None
    assert shifted is not None
    assert not calm.drift_detected, calm.drifted_features
    assert "a" in shifted.drifted_features
    numeric = [feature for feature in shifted.features if feature.kind == "numeric"]
    assert numeric
    assert all(feature.statistic is not None for feature in numeric), [f.message for f in numeric]
    assert calm.multivariate is None
    assert shifted.multivariate is None
    assert AGGREGATES_ONLY in shifted.messages
    assert MULTIVARIATE_SKIPPED in shifted.messages
    assert "multivariate (MMD) test is skipped" in (Path(run.reports_dir) / LATEST_REPORT).read_text()


def test_a_profile_written_with_profile_sample_none_keeps_no_row(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "train.parquet", churn_table(300))
    spec = TrainingJobSpec.model_validate(training_run(tmp_path)["spec"])
    data = load_data(tmp_path / "data", spec.data, spec.model.task)
    model_input = TensorSpec(name="INPUT__0", data_type="TYPE_FP32", dims=[data.features.shape[1]])

    with_rows = profile_data(data, spec.data, spec.model.task, "0" * 64, model_input, seed=1)
    without = profile_data(data, spec.data, spec.model.task, "0" * 64, model_input, seed=1, sample="none")

    assert with_rows.sample.rows == 300
    assert (without.sample.rows, without.sample.columns) == (0, {})
    assert without.features == with_rows.features
    assert without.target == with_rows.target
    assert '"rows":0' in without.model_dump_json(by_alias=True).replace(" ", "")
