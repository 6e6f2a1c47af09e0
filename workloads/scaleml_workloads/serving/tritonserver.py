"""A Triton server process from the `nvidia-pytriton` wheel, for local mode, tests and benchmarks.

The wheel ships `tritonserver` (2.51) with the Python backend only. Two things make it run outside
its own launcher: the backend directory must hold the Python stub built for the running
interpreter, and the server's bundled libraries must be on the loader path. The stub runs in this
interpreter's environment, so a model.py can import torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from scaleml_api.runtime import restricted_api_options, triton_options

_PACKAGE: Final = "pytriton"
_STUB: Final = "triton_python_backend_stub"


class TritonUnavailableError(RuntimeError):
    """The nvidia-pytriton wheel is not installed."""


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int


def _package_dir() -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    package = site / _PACKAGE / "tritonserver"
    if not (package / "bin" / "tritonserver").exists():
        raise TritonUnavailableError(f"tritonserver not found under {package}: install nvidia-pytriton")
    return package


def backend_directory(cache: Path) -> Path:
    """A backend directory whose python backend holds the stub for this interpreter."""
    package = _package_dir()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    backends = cache / f"backends-py{python}"
    target = backends / "python"
    if not (target / _STUB).exists():
        target.mkdir(parents=True, exist_ok=True)
        for entry in (package / "backends" / "python").iterdir():
            if entry.is_file():
                shutil.copy2(entry, target / entry.name)
        staged = target / f".{_STUB}.{os.getpid()}"
        shutil.copy2(package / "python_backend_stubs" / python / _STUB, staged)
        staged.rename(target / _STUB)
    return backends


def binary() -> Path:
    """The wheel's tritonserver."""
    return _package_dir() / "bin" / "tritonserver"


def command(
    repository: Path, ports: Ports, cache: Path, extra: Sequence[str] = (), admin_key: str | None = None
) -> list[str]:
    """The tritonserver command line of a ModelDeployment's pod, on local ports.

    With `admin_key`, Triton's management APIs (runtime.RESTRICTED_APIS) answer only requests that
    send it, as in a pod; without, they answer anyone (local mode asks the repository index whether
    a version is ready).
    """
    return [
        str(binary()),
        *triton_options(str(repository)),
        *(restricted_api_options(admin_key) if admin_key is not None else ()),
        f"--backend-directory={backend_directory(cache)}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        *extra,
    ]


def environment(threads: int | None = 1) -> dict[str, str]:
    """The server's environment; `threads` is each model instance's intra-op thread count, as the operator
    sets it in a pod (None: the libraries' default, one per core)."""
    site = sysconfig.get_paths()["purelib"]
    libraries = str(Path(site) / "nvidia_pytriton.libs")
    loader_path = os.pathsep.join(filter(None, [libraries, os.environ.get("LD_LIBRARY_PATH", "")]))
    # The stub's embedded interpreter finds its environment (sys.prefix, site-packages) from the
    # first `python` on PATH, as pytriton's own launcher arranges.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    threading = {} if threads is None else {"OMP_NUM_THREADS": str(threads)}
    return {**os.environ, "LD_LIBRARY_PATH": loader_path, "PATH": path, **threading}


def start(
    repository: Path,
    ports: Ports,
    cache: Path,
    extra: Sequence[str] = (),
    log: IO[bytes] | None = None,
    threads: int | None = 1,
    admin_key: str | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command(repository, ports, cache, extra, admin_key),
        env=environment(threads),
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_ready(process: subprocess.Popen[bytes], http_port: int, timeout: float = 120.0) -> None:
    """Waits until the server is ready (every model loaded, with --strict-readiness); raises if it exits."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{http_port}/v2/health/ready"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"tritonserver was not ready on port {http_port} within {timeout:.0f} s")
