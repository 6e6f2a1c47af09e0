"""Progress reporting from rank 0: the TrainingJob's status.progress, Prometheus metrics and the log.

The status is patched through the Kubernetes API with the pod's ServiceAccount, using only the
standard library, from a background thread that always sends the newest progress: a slow or
unreachable API server delays nothing and fails nothing, it only leaves the status behind.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from prometheus_client import Gauge, Histogram, start_http_server

from scaleml_workloads.contract.base import API_VERSION

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# At most one status patch per interval, besides epoch ends and the end of the run.
REPORT_INTERVAL_SECONDS: Final = 10.0
_REQUEST_TIMEOUT_SECONDS: Final = 5.0

STEP = Gauge("scaleml_training_step", "Optimizer steps taken.")
TOTAL_STEPS = Gauge("scaleml_training_total_steps", "Optimizer steps the run will take.")
EPOCH = Gauge("scaleml_training_epoch", "Current epoch, from 0.")
LOSS = Gauge("scaleml_training_loss", "Training loss, mean since the previous report.")
VALIDATION_METRIC = Gauge("scaleml_training_validation_metric", "Accuracy or RMSE on the validation rows.")
SAMPLES_PER_SECOND = Gauge("scaleml_training_samples_per_second", "Training samples per second over the group.")
CHECKPOINT_SECONDS = Histogram(
    "scaleml_training_checkpoint_seconds",
    "Time to write a checkpoint.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


@dataclass(frozen=True)
class Snapshot:
    """status.progress of the TrainingJob."""

    epoch: int
    step: int
    total_steps: int
    loss: float | None
    validation_metric: float | None
    samples_per_second: float

    def as_status(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "totalSteps": self.total_steps,
            "loss": self.loss,
            "validationMetric": self.validation_metric,
            "samplesPerSecond": round(self.samples_per_second, 1),
        }


class StatusPatcher:
    """Sends JSON merge patches to the TrainingJob's /status from a background thread, newest first."""

    def __init__(self, namespace: str, name: str, credentials: Path = SERVICE_ACCOUNT_DIR) -> None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        host = f"[{host}]" if ":" in host else host
        self.url = f"https://{host}:{port}/apis/{API_VERSION}/namespaces/{namespace}/trainingjobs/{name}/status"
        self.enabled = bool(host)
        if not self.enabled:
            log.warning("KUBERNETES_SERVICE_HOST is not set: the TrainingJob's status will not be updated")
        self.credentials = credentials
        self._pending: dict[str, Any] | None = None
        self._busy = False
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._send_loop, name="status-patcher", daemon=True)
        self._thread.start()

    def patch(self, status: dict[str, Any]) -> None:
        """Queue `status` (merged into any patch not yet sent)."""
        if not self.enabled:
            return
        with self._condition:
            self._pending = {**(self._pending or {}), **status}
            self._condition.notify()

    def close(self, timeout: float = _REQUEST_TIMEOUT_SECONDS * 2) -> None:
        """Send what is queued, waiting at most `timeout` seconds, and stop the thread."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while (self._pending is not None or self._busy) and (remaining := deadline - time.monotonic()) > 0:
                self._condition.wait(remaining)
            self._closed = True
            self._condition.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._closed:
                    self._condition.wait()
                if self._closed:
                    return
                body, self._pending, self._busy = self._pending, None, True
            assert body is not None
            try:
                self._send(body)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _send(self, status: dict[str, Any]) -> None:
        try:
            # Read at every request: the kubelet rotates projected ServiceAccount tokens.
            token = (self.credentials / "token").read_text().strip()
            context = ssl.create_default_context(cafile=str(self.credentials / "ca.crt"))
            request = urllib.request.Request(
                self.url,
                data=json.dumps({"status": status}).encode(),
                method="PATCH",
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/merge-patch+json",
                    "Accept": "application/json",
                },
            )
            with urllib.request.urlopen(request, context=context, timeout=_REQUEST_TIMEOUT_SECONDS) as response:
                response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            log.warning("status patch refused by %s: HTTP %d %s", self.url, error.code, detail)
        except (OSError, ssl.SSLError) as error:
            # URLError, timeouts, refused connections and missing credentials are all OSErrors.
            log.warning("status patch to %s failed: %s", self.url, error)


class ProgressReporter:
    """Rank 0's reporting, throttled; on other ranks every method does nothing."""

    def __init__(
        self,
        patcher: StatusPatcher | None,
        *,
        leader: bool,
        metrics_port: int,
        interval: float = REPORT_INTERVAL_SECONDS,
    ) -> None:
        self.patcher = patcher if leader else None
        self.leader = leader
        self.interval = interval
        self._last = time.monotonic()
        if leader and metrics_port:
            start_http_server(metrics_port)
            log.info("serving Prometheus metrics on :%d", metrics_port)

    def due(self) -> bool:
        """Whether a throttled report is due now (cheap: called every step)."""
        return self.leader and time.monotonic() - self._last >= self.interval

    def report(self, snapshot: Snapshot) -> None:
        if not self.leader:
            return
        self._last = time.monotonic()
        STEP.set(snapshot.step)
        TOTAL_STEPS.set(snapshot.total_steps)
        EPOCH.set(snapshot.epoch)
        if snapshot.loss is not None:
            LOSS.set(snapshot.loss)
        if snapshot.validation_metric is not None:
            VALIDATION_METRIC.set(snapshot.validation_metric)
        SAMPLES_PER_SECOND.set(snapshot.samples_per_second)
        log.info(
            "epoch %d step %d/%d loss %s validation %s %.0f samples/s",
            snapshot.epoch,
            snapshot.step,
            snapshot.total_steps,
            "-" if snapshot.loss is None else f"{snapshot.loss:.4g}",
            "-" if snapshot.validation_metric is None else f"{snapshot.validation_metric:.4g}",
            snapshot.samples_per_second,
        )
        if self.patcher is not None:
            self.patcher.patch({"progress": snapshot.as_status()})

    def checkpoint_saved(self, seconds: float) -> None:
        if self.leader:
            CHECKPOINT_SECONDS.observe(seconds)

    def finish(self, model_version: int) -> None:
        """Report the exported version and flush what is queued."""
        if self.patcher is not None:
            self.patcher.patch({"modelVersion": model_version})
            self.patcher.close()
