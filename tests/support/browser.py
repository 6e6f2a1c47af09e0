"""A page as headless Chromium builds and paints it: the DOM it ends with, and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.requirements import skip_or_fail


def render(page: Path, scratch: Path, size: str) -> tuple[str, Path]:
    """The DOM of `page` after Chromium loaded it, and a PNG of it at `size` ("WIDTH,HEIGHT"), under `scratch`."""
    chromium = shutil.which("chromium") or ""
    if not chromium:
        skip_or_fail("chromium not found: `make chromium` installs Debian's package")
    screenshot = scratch / f"{page.stem}.png"
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={scratch / 'chromium'}"]
    dom = subprocess.run(
        [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    subprocess.run(
        [*browser, f"--screenshot={screenshot}", f"--window-size={size}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom, screenshot
