"""The operator's API requests, as kube-apiserver's audit log records them.

The policy audits the operator's ServiceAccount alone, at level Metadata (verb, resource, user and
times; no bodies), so the log costs the API server little and holds nothing else. Each request
counts once: when its response completed, or, for a watch, when it started streaming (a watch
completes only when it ends, perhaps minutes later).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import yaml

POLL_SECONDS: Final = 0.5


def policy(user: str) -> dict[str, Any]:
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        # RequestReceived would log each request once more, before it is answered.
        "omitStages": ["RequestReceived"],
        "rules": [{"level": "Metadata", "users": [user]}, {"level": "None"}],
    }


def apiserver_flags(directory: Path, user: str) -> tuple[list[str], Path]:
    """kube-apiserver's flags for an audit log of `user`'s requests in `directory`, and the log's path."""
    policy_file, log = directory / "audit-policy.yaml", directory / "audit.log"
    policy_file.write_text(yaml.safe_dump(policy(user)))
    # kube-apiserver appends to the file: an earlier run's requests would be read again.
    log.unlink(missing_ok=True)
    return [
        f"--audit-policy-file={policy_file}",
        f"--audit-log-path={log}",
        "--audit-log-format=json",
        # Written as each request completes (the default for the log backend, stated here since the
        # bench waits for the operator's silence in this file).
        "--audit-log-mode=blocking",
        # Never rotated during a run: the reader follows one file by offset.
        "--audit-log-maxsize=100000",
    ], log


@dataclass(frozen=True)
class Request:
    at: float
    verb: str
    resource: str
    code: int

    @property
    def name(self) -> str:
        """Verb and resource, and the response code if it was an error: "get jobs [404]"."""
        return f"{self.verb} {self.resource}" + (f" [{self.code}]" if self.code >= 400 else "")


def _request(event: dict[str, Any]) -> Request | None:
    """The request an audit event stands for, if this event is the one it is counted at."""
    verb, stage = event.get("verb", ""), event.get("stage")
    counted = stage == "ResponseStarted" if verb == "watch" else stage in ("ResponseComplete", "Panic")
    if not counted:
        return None
    ref = event.get("objectRef") or {}
    # Requests for no object are the API discovery's: /api, /apis, /apis/<group>/<version>, /version.
    resource = ref.get("resource") or "discovery"
    if ref.get("subresource"):
        resource += f"/{ref['subresource']}"
    code = (event.get("responseStatus") or {}).get("code", 0)
    return Request(datetime.fromisoformat(event["stageTimestamp"]).timestamp(), verb, resource, code)


class AuditLog:
    """Follows the audit log as it grows, keeping the requests of one user."""

    def __init__(self, path: Path, user: str) -> None:
        self.path = path
        self.user = user
        self.requests: list[Request] = []
        #: When the latest request was answered (requests complete out of the order they are logged in).
        self.last = 0.0
        self._offset = 0
        self._partial = b""

    def read(self) -> None:
        """Takes in what was written since the last read (a line cut short waits for the next one)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            event = json.loads(line)
            if (event.get("user") or {}).get("username") != self.user:
                continue
            request = _request(event)
            if request is not None:
                self.requests.append(request)
                self.last = max(self.last, request.at)

    def between(self, start: float, end: float) -> list[Request]:
        return [r for r in self.requests if start <= r.at <= end]

    def wait_quiet(self, quiet: float, timeout: float) -> float:
        """Waits until `quiet` seconds pass without a request; returns the time of the last one before.

        The operator is settled then: it has acted on everything it was told. Raises TimeoutError
        if it keeps on for `timeout` seconds.
        """
        began = time.time()
        while True:
            self.read()
            last = max(self.last, began)
            now = time.time()
            if now - last >= quiet:
                return last
            if now - began > timeout:
                raise TimeoutError(f"the operator kept sending requests for {timeout:g} s")
            time.sleep(POLL_SECONDS)


def by_name(requests: Iterable[Request]) -> dict[str, int]:
    """Counts by verb and resource, the most frequent first."""
    return dict(Counter(r.name for r in requests).most_common())
