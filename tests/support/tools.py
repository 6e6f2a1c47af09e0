"""Pinned tools the monitoring and install tests run, installed by `make promtool` and `make prometheus-crds`.

Each lives in a cache outside the repository (default ``~/.cache/scaleml/tools``); the Makefile exports
its path as ``SCALEML_PROMTOOL`` and ``SCALEML_PROMETHEUS_CRDS``. The versions here and in the Makefile
must agree (tests/unit/test_monitoring.py checks).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from tests.support.requirements import skip_or_fail

PROMTOOL_VERSION: Final = "2.53.3+ds1-2"
PROMETHEUS_OPERATOR_VERSION: Final = "v0.95.1"
TOOLS_DIR: Final = Path("~/.cache/scaleml/tools")
PROMETHEUS_OPERATOR_KINDS: Final = ("servicemonitors", "podmonitors", "prometheusrules")


def promtool() -> Path:
    """promtool from Debian's prometheus package; skips (or fails, under `make test`) when absent."""
    default = TOOLS_DIR / f"promtool-{PROMTOOL_VERSION}" / "promtool"
    path = Path(os.environ.get("SCALEML_PROMTOOL") or default).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        skip_or_fail(f"promtool not found at {path}: `make promtool` installs it")
    return path


def prometheus_operator_crds() -> list[Path]:
    """The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs."""
    default = TOOLS_DIR / f"prometheus-operator-{PROMETHEUS_OPERATOR_VERSION}"
    directory = Path(os.environ.get("SCALEML_PROMETHEUS_CRDS") or default).expanduser() / "crds"
    files = [directory / f"monitoring.coreos.com_{kind}.yaml" for kind in PROMETHEUS_OPERATOR_KINDS]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        skip_or_fail(f"Prometheus Operator CRDs not found ({', '.join(missing)}): `make prometheus-crds` makes them")
    return files
