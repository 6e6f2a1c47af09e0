"""The status file of local runs: JSON merge patches into a file, as the API server applies them to /status."""

from __future__ import annotations

import json
from pathlib import Path

from scaleml_workloads.kubeapi import StatusFile, StatusPatcher, status_sink


def test_patches_merge_and_none_removes_a_field(tmp_path: Path) -> None:
    path = tmp_path / "status" / "churn.json"
    sink = StatusFile(path)
    assert sink.read() == {}

    sink.patch({"progress": {"step": 1, "loss": 0.5}, "driftSince": "2026-01-01T00:00:00Z"})
    sink.patch({"progress": {"step": 2}, "driftSince": None})
    sink.close()

    assert json.loads(path.read_text()) == {"progress": {"step": 2, "loss": 0.5}}
    assert [entry.name for entry in path.parent.iterdir()] == ["churn.json"], "no temporary file is left"


def test_a_status_file_replaces_the_api_server(tmp_path: Path) -> None:
    assert isinstance(status_sink(str(tmp_path / "s.json"), "ml", "trainingjobs", "churn"), StatusFile)
    patcher = status_sink(None, "ml", "trainingjobs", "churn")
    assert isinstance(patcher, StatusPatcher)
    patcher.close(timeout=0)
