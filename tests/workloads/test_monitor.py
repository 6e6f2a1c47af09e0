"""The drift monitor on real capture files and a real training profile, reporting to a real API server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pytest
from PIL import Image
from prometheus_client import REGISTRY

from scaleml_api.profile import DataProfile
from scaleml_api.runtime import CONFIG_ENV, TERMINATION_LOG_ENV, MonitorRun
from scaleml_operator.builders import driftmonitor as build
from scaleml_operator.builders.meta import Owner
from scaleml_workloads.drift.detector import DriftDetector
from scaleml_workloads.kubeapi import InClusterClient, StatusPatcher
from scaleml_workloads.monitor.loop import LATEST_REPORT, Monitor, Reporter
from tests.support.controlplane import ControlPlane
from tests.support.fixtures import NamespaceFactory
from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for
from tests.support.requirements import skip_or_fail
from tests.workloads.monitoring import model_inputs, write_window
from tests.workloads.runs import churn_table

pytestmark = pytest.mark.workloads

WINDOW = 1000


def _run(exported_model: Path, root: Path, **spec: Any) -> MonitorRun:
    return MonitorRun.model_validate(
        {
            "namespace": "ml",
            "name": "churn",
            "spec": merged(example("DriftMonitor")["spec"], {"window": {"size": WINDOW, "every": "1s"}, **spec}),
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
    chromium = shutil.which("chromium") or ""
    if not chromium:
        skip_or_fail("chromium not found: `make chromium` installs Debian's package")
    run = _run(exported_model, tmp_path)
    profile = _profile(run)
    monitor = _monitor(run)
    captures = Path(run.captures_dir)
    write_window(captures, model_inputs(profile, churn_table(WINDOW, seed=61)), start=10.0)
    monitor.check()
    write_window(captures, model_inputs(profile, _shifted(churn_table(WINDOW, seed=62), "a", 1.5)), start=20.0)
    assert monitor.check() is not None
    page = Path(run.reports_dir) / LATEST_REPORT
    screenshot = tmp_path / "report.png"
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'chromium'}"]

    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    subprocess.run(
        [*browser, f"--screenshot={screenshot}", "--window-size=1400,2400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )

    # As the browser built it: one figure with one chart per feature, the trend, the table.
    assert dom.count("<figure") == len(profile.features)
    assert dom.count("<svg") == len(profile.features) + 1
    assert dom.count("<tr") == len(profile.features) + 1
    image = Image.open(screenshot).convert("RGB")
    colours = Counter(image.get_flattened_data())
    # Bars of both distributions were painted, not just laid out.
    assert colours[(0x48, 0x78, 0xA8)] > 2000
    assert colours[(0xE0, 0x82, 0x3D)] > 2000
