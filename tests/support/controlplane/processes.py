"""The control plane's processes: starting a component with its log, waiting until it is ready, and ending it.

Every component runs in its own session and logs to ``<workdir>/<name>.log``; a failure carries the
tail of that log. Also the small HTTP helpers the readiness checks use (never a proxy: everything
is on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Final

_LOG_TAIL_LINES: Final = 40


class ControlPlaneError(RuntimeError):
    """A component failed to start or to become ready; the message carries the tail of its log."""


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log, or why it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def proc_status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    """An opener that never uses proxies (everything is on 127.0.0.1) and trusts ``context``."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


@dataclasses.dataclass
class Component:
    """One running component: its process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started_at: float

    def failure(self, what: str) -> ControlPlaneError:
        code = self.process.poll()
        state = f"exited with code {code}" if code is not None else "still running"
        return ControlPlaneError(f"{self.name} {what} ({state}); last lines of {self.log_path}:\n{tail(self.log_path)}")


def spawn(
    workdir: Path, name: str, binary: Path, args: Sequence[str], env: Mapping[str, str] | None = None
) -> Component:
    """Start ``binary`` in ``workdir`` in a session of its own, logging to ``<workdir>/<name>.log``."""
    log_path = workdir / f"{name}.log"
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed in terminate
    environment = dict(os.environ)
    no_proxy = ",".join(filter(None, [environment.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    environment.update({"NO_PROXY": no_proxy, "no_proxy": no_proxy, **(env or {})})
    command = [str(binary), *args]
    log_file.write(f"# {' '.join(command)}\n".encode())
    log_file.flush()
    try:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log_file.close()
        raise ControlPlaneError(f"cannot start {name} ({binary}): {exc}") from exc
    return Component(name, process, log_path, log_file, time.monotonic())


def wait_until(component: Component, what: str, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until it is true; fail fast (with the log tail) if the component exits."""
    began = time.monotonic()
    deadline = began + timeout
    delay = 0.05
    while True:
        if component.process.poll() is not None:
            raise component.failure(what)
        if ready():
            return
        if time.monotonic() > deadline:
            raise component.failure(f"{what} within {deadline - began:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def terminate(components: Sequence[Component]) -> None:
    """SIGTERM, up to 10 s, SIGKILL: first the API clients together, then kube-apiserver, then etcd.

    The order matters: an apiserver whose etcd is already gone spends its whole grace period
    retrying etcd connections instead of shutting down.
    """
    core = ("kube-apiserver", "etcd")
    waves = [[c for c in components if c.name not in core]] + [
        [c for c in components if c.name == name] for name in core
    ]
    for wave in waves:
        for component in wave:
            if component.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    component.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for component in wave:
            try:
                component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    component.process.kill()
                component.process.wait()
            component.log_file.close()


def http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with opener(context).open(urllib.request.Request(url), timeout=5) as response:
            return bool(response.status == 200)
    except OSError:  # URLError, HTTPError, ssl.SSLError and connection errors are all OSErrors
        return False


def insecure_context() -> ssl.SSLContext:
    """For the components' own /healthz endpoints, which serve self-signed certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
