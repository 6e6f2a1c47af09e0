"""The workloads export every metric the dashboards and alerts query (tests/support/metrics_catalog.py).

Each component runs for real and its /metrics endpoint is scraped: rank 0's progress reporter of a
training run, Triton with the options a ModelDeployment's pod gives it, the capture converter beside
that Triton, and a drift monitor process.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from scaleml_api.runtime import MonitorRun
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec
from scaleml_workloads.serving import tritonserver
from scaleml_workloads.training.report import ProgressReporter, Snapshot
from tests.support.manifests import example
from tests.support.metrics_catalog import EXPORTED, exposed
from tests.support.polling import wait_for
from tests.support.ports import free_port
from tests.support.requirements import skip_or_fail
from tests.workloads.runs import PYTHON

pytestmark = pytest.mark.workloads

MODEL = "echo"
# The smallest model Triton serves: the Python backend returns its input. Metric names are the server's.
CONFIG = f"""
name: "{MODEL}"
backend: "python"
max_batch_size: 8
input [{{ name: "INPUT__0", data_type: TYPE_FP32, dims: [ 4 ] }}]
output [{{ name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] }}]
dynamic_batching {{ }}
"""
MODEL_PY = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT__0", pb_utils.get_input_tensor_by_name(request, "INPUT__0").as_numpy())]
            )
            for request in requests
        ]
"""


def scrape(port: int) -> str | None:
    """The /metrics page on a local port; None while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()  # type: ignore[no-any-return]
    except (urllib.error.URLError, ConnectionError):
        return None


def missing(component: str, page: str) -> list[str]:
    return sorted(EXPORTED[component] - exposed(page))


@contextlib.contextmanager
def process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        running = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield running
        except BaseException:
            print(log.read_text()[-4000:])
            raise
        finally:
            running.terminate()
            try:
                running.wait(timeout=30)
            except subprocess.TimeoutExpired:
                running.kill()
                running.wait()


def infer(http: str) -> None:
    batch = np.ones((2, 4), dtype=np.float32)
    tensor = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    httpclient.InferenceServerClient(http).infer(MODEL, [tensor])


def test_rank_0_of_a_training_run_exports_the_training_metrics() -> None:
    port = free_port()
    reporter = ProgressReporter(None, leader=True, metrics_port=port)
    reporter.report(
        Snapshot(epoch=1, step=120, total_steps=400, loss=0.4, validation_metric=0.8, samples_per_second=900)
    )
    reporter.checkpoint_saved(0.2)
    page = wait_for(lambda: scrape(port), timeout=10, message="the training metrics")
    assert missing("training", page) == []


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tritonserver.Ports]:
    root = tmp_path_factory.mktemp("metrics-triton")
    repository = root / "serving"
    (repository / MODEL / "1").mkdir(parents=True)
    (repository / MODEL / "config.pbtxt").write_text(CONFIG)
    (repository / MODEL / "1" / "model.py").write_text(MODEL_PY)
    try:
        tritonserver.backend_directory(root / "cache")
    except tritonserver.TritonUnavailableError as error:
        skip_or_fail(str(error))
    ports = tritonserver.Ports(free_port(), free_port(), free_port())
    with (root / "triton.log").open("wb") as log:
        server = tritonserver.start(repository, ports, root / "cache", log=log)
        try:
            tritonserver.wait_ready(server, ports.http)
            yield ports
        except BaseException:
            print((root / "triton.log").read_text()[-4000:])
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_triton_exports_the_inference_metrics(triton_server: tritonserver.Ports) -> None:
    infer(f"127.0.0.1:{triton_server.http}")
    page = scrape(triton_server.metrics)
    assert page is not None
    assert missing("triton", page) == []


def test_the_capture_converter_exports_the_capture_metrics(triton_server: tritonserver.Ports, tmp_path: Path) -> None:
    metrics = free_port()
    (tmp_path / "captures").mkdir()
    (tmp_path / "traces").mkdir()
    command = [
        PYTHON,
        "-m",
        "scaleml_workloads.capture",
        f"--traces={tmp_path / 'traces'}",
        f"--metrics-port={metrics}",
        f"--directory={tmp_path / 'captures'}",
    ]
    with process(command, tmp_path / "capture.log") as converter:

        def scraped() -> str | None:
            assert converter.poll() is None, "the capture converter exited"
            return scrape(metrics)

        page = wait_for(scraped, timeout=30, message="the capture converter's metrics")
    assert missing("capture", page) == []


def test_the_drift_monitor_exports_the_drift_metrics(tmp_path: Path) -> None:
    metrics = free_port()
    run = MonitorRun(
        namespace="ml",
        name="churn",
        spec=DriftMonitorSpec.model_validate(example("DriftMonitor")["spec"]),
        profile_path=str(tmp_path / "profile.json"),
        captures_dir=str(tmp_path / "captures"),
        reports_dir=str(tmp_path / "reports"),
        metrics_port=metrics,
        report_port=0,
        report_status=False,
    )
    config = tmp_path / "run.json"
    config.write_text(json.dumps(run.model_dump(mode="json", by_alias=True)))
    command = [PYTHON, "-m", "scaleml_workloads.monitor", f"--config={config}"]
    # Without its reference profile yet, the monitor waits for it and says so in its metrics.
    with process(command, tmp_path / "monitor.log") as monitor:

        def page() -> str | None:
            assert monitor.poll() is None, "the monitor exited"
            return scrape(metrics)

        text = wait_for(page, timeout=30, message="the monitor's metrics")
    assert missing("monitor", text) == []
    assert "scaleml_drift_reference_available 0.0" in text
