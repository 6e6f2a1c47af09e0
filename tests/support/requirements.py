"""What to do when the suite lacks a part it needs."""

from __future__ import annotations

import os

import pytest


def skip_or_fail(reason: str) -> None:
    """Skip a test whose binaries are missing, unless the run promised them (`make test` does)."""
    if os.environ.get("SCALEML_REQUIRE_CONTROL_PLANE"):
        pytest.fail(reason)
    pytest.skip(reason)
