"""`python -m scaleml_workloads.monitor`: the drift monitor's process.

Serves the newest HTML report on its report port (`/`, every kept report under `/reports/NAME`,
`/healthz`) and Prometheus metrics on its metrics port, and checks a window every `window.every`.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Final

from prometheus_client import start_http_server
from pydantic import ValidationError

from scaleml_api.profile import DataProfile
from scaleml_api.runtime import CONFIG_ENV, EXIT_INVALID_INPUT, MonitorRun, write_termination_message
from scaleml_workloads.monitor import metrics
from scaleml_workloads.monitor.accuracy import AccuracyEstimator
from scaleml_workloads.monitor.loop import LATEST_REPORT, Monitor, Reporter
from scaleml_workloads.monitor.reference import detector_for
from scaleml_workloads.signals import stop_on_signals

log = logging.getLogger("scaleml_workloads.monitor")

PROFILE_RETRY_SECONDS: Final = 30.0
_NO_REPORT: Final = b"<!DOCTYPE html><html><body><p>No window has been tested yet.</p></body></html>"


def report_server(directory: Path, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
                return
            name = LATEST_REPORT if self.path in ("/", "/report") else self.path.removeprefix("/reports/")
            # Names only: nothing outside the reports directory is served.
            if "/" in name or name.startswith(".") or not name.endswith(".html"):
                self._send(404, b"not found\n", "text/plain")
                return
            try:
                self._send(200, (directory / name).read_bytes(), "text/html; charset=utf-8")
            except FileNotFoundError:
                self._send(200 if name == LATEST_REPORT else 404, _NO_REPORT, "text/html; charset=utf-8")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes and scrapes every few seconds would drown the log."""

    server = ThreadingHTTPServer(("", port), Handler)
    threading.Thread(target=server.serve_forever, name="report-server", daemon=True).start()
    return server


def _fail(message: str) -> int:
    log.error("%s", message)
    write_termination_message(message)
    return EXIT_INVALID_INPUT


def _reference(run: MonitorRun, stop: threading.Event, *, retry: bool) -> DataProfile | None:
    """The reference profile; waits (saying why, once) while it cannot be read, rather than crash-looping."""
    said = ""
    while not stop.is_set():
        try:
            return DataProfile.model_validate_json(Path(run.profile_path).read_text())
        except (OSError, ValidationError) as error:
            metrics.REFERENCE_AVAILABLE.set(0)
            if str(error) != said:
                log.error("the reference profile %s cannot be read (retrying): %s", run.profile_path, error)
                said = str(error)
            if not retry:
                return None
        stop.wait(PROFILE_RETRY_SECONDS)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaleml_workloads.monitor", description=__doc__)
    parser.add_argument("--config", type=Path, help=f"MonitorRun JSON file (default: the {CONFIG_ENV} variable)")
    parser.add_argument("--once", action="store_true", help="Test one window and exit.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run = MonitorRun.model_validate_json(args.config.read_text() if args.config else os.environ[CONFIG_ENV])
    except (OSError, KeyError, ValidationError) as error:
        return _fail(f"no valid MonitorRun: {error}")
    stop = stop_on_signals(log, "stopping after the current check")
    if run.metrics_port:
        start_http_server(run.metrics_port)
    if run.report_port:
        report_server(Path(run.reports_dir), run.report_port)
    profile = _reference(run, stop, retry=not args.once)
    if profile is None:
        return _fail(f"the reference profile {run.profile_path} cannot be read") if args.once else 0
    detector, notes = detector_for(profile, run.spec)
    for note in notes:
        log.info("%s", note)
    if run.model_version is not None:
        metrics.REFERENCE_VERSION.set(run.model_version)
    reporter = Reporter.for_run(run)
    monitor = Monitor(
        run,
        detector,
        reporter,
        episode=reporter.resume(),
        accuracy=AccuracyEstimator.from_profile(profile),
        degradation=reporter.resume("degradation"),
        notes=notes,
    )
    if args.once:
        monitor.check()
        reporter.close()
        return 0
    log.info(
        "monitoring %s every %s, windows of %d rows, reference %s",
        run.captures_dir,
        run.spec.window.every,
        run.spec.window.size,
        run.profile_path,
    )
    monitor.run_forever(stop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
