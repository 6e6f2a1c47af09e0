"""`python -m tests.support.cluster` run as a user runs it, for the tests of `make cluster`: its output, its
processes, and a stop that leaves none of them behind whatever happens."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.manifests import ROOT
from tests.support.polling import wait_for

Process = tuple[int, int]  # (pid, start time in clock ticks): a pid alone may be reused


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, ppid, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # Fields 3 (state) onwards; ppid is field 4, starttime field 22 (proc(5)). A zombie is gone already.
    if fields[0] == "Z":
        return None
    return comm, int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[Process, str]:
    """The live processes below `root`, with their names."""
    parents: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
            parents.setdefault(stat[1], []).append(int(entry.name))
    found: dict[Process, str] = {}
    pending = list(parents.get(root, []))
    while pending:
        pid = pending.pop()
        comm, _, started = stats[pid]
        found[(pid, started)] = comm
        pending.extend(parents.get(pid, []))
    return found


def alive(process: Process) -> bool:
    """Whether the process is still the one seen (not a new one with its pid)."""
    stat = _stat(process[0])
    return stat is not None and stat[2] == process[1]


@contextlib.contextmanager
def cluster_process(directory: Path, output: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """The module running with `options`, its files in `directory`, what it prints in `output`; stopped
    with Ctrl-C (SIGINT) and reaped, and whatever it started killed should it fail to stop it."""
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cluster", f"--dir={directory}", *options],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    seen: dict[Process, str] = {}
    try:
        yield process
    finally:
        seen.update(descendants(process.pid))
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=180)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Only if the module failed to: its children, by pid and start time.
        for child in seen:
            if alive(child):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child[0], signal.SIGKILL)


def printed_kubeconfig(process: subprocess.Popen[bytes], output: Path, timeout: float) -> Path:
    """The KUBECONFIG the module printed once it was up; fails with its output if it exited first."""

    def printed() -> str | None:
        if process.poll() is not None:
            raise AssertionError(f"the module exited with {process.returncode}:\n{output.read_text()}")
        found = re.search(r"^\s*export KUBECONFIG=(\S+)$", output.read_text(), re.MULTILINE)
        return found.group(1) if found else None

    return Path(wait_for(printed, timeout, "the printed KUBECONFIG", interval=0.2))
