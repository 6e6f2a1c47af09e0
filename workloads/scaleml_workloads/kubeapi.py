"""The Kubernetes API as a workload pod uses it: its own object's status and Events, with the standard library.

Pods report on the object that started them (a TrainingJob's progress, a DriftMonitor's results)
with the ServiceAccount the operator gave them, allowed to do exactly that. Patches go out from a
background thread that always sends the newest state: a slow or unreachable API server delays
nothing and fails nothing, it only leaves the status behind until it answers again. Outside a
cluster (`scaleml local`) the same patches merge into a JSON file instead: `status_sink` picks one.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from scaleml_api.base import API_VERSION
from scaleml_api.merge import merge_patch
from scaleml_workloads.atomic import write_text_atomically

log = logging.getLogger(__name__)

# What a request to the API server can fail with: HTTP errors, TLS errors, timeouts, refused
# connections and missing credentials are all OSErrors; a malformed answer is a ValueError.
REQUEST_ERRORS: Final = (OSError, ValueError)

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT_SECONDS: Final = 5.0
# A status patch the API server could not take is sent again after these pauses, doubling up to the last.
RETRY_FIRST_SECONDS: Final = 0.5
RETRY_MAX_SECONDS: Final = 30.0
_RETRYING: Final = " (sending it again)"


class InClusterClient:
    """Requests to the API server of the pod's cluster; `enabled` is False outside a cluster."""

    def __init__(self, credentials: Path = SERVICE_ACCOUNT_DIR) -> None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.base = f"https://{f'[{host}]' if ':' in host else host}:{port}"
        self.enabled = bool(host)
        self.credentials = credentials

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """The decoded response; raises urllib.error.HTTPError or OSError."""
        # Read at every request: the kubelet rotates projected ServiceAccount tokens.
        token = (self.credentials / "token").read_text().strip()
        context = ssl.create_default_context(cafile=str(self.credentials / "ca.crt"))
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type, "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return json.loads(response.read() or b"null")


def object_path(namespace: str, plural: str, name: str) -> str:
    return f"/apis/{API_VERSION}/namespaces/{namespace}/{plural}/{name}"


def _passing(error: urllib.error.HTTPError) -> bool:
    """An answer that may be different later: too many requests, or the server's own failure."""
    return error.code == 429 or error.code >= 500


class StatusPatcher:
    """Sends JSON merge patches to an object's /status from a background thread, newest first.

    A patch the API server did not take for a passing reason (unreachable, too slow, overloaded:
    `_passing`) is merged under the newer ones and sent again after a pause that doubles up to
    RETRY_MAX_SECONDS: a monitor writes its result once per window, and a lost one would leave the
    status behind until the next. A refusal (forbidden, gone, invalid) would be refused again: it
    is logged and dropped.
    """

    def __init__(self, namespace: str, plural: str, name: str, credentials: Path = SERVICE_ACCOUNT_DIR) -> None:
        self.client = InClusterClient(credentials)
        self.path = object_path(namespace, plural, name) + "/status"
        self.enabled = self.client.enabled
        if not self.enabled:
            log.warning("KUBERNETES_SERVICE_HOST is not set: the %s status will not be updated", plural)
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

    def close(self, timeout: float = REQUEST_TIMEOUT_SECONDS * 2) -> None:
        """Send what is queued, waiting at most `timeout` seconds, and stop the thread."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while (self._pending is not None or self._busy) and (remaining := deadline - time.monotonic()) > 0:
                self._condition.wait(remaining)
            self._closed = True
            self._condition.notify_all()

    def _send_loop(self) -> None:
        pause = 0.0
        while True:
            with self._condition:
                resume = time.monotonic() + pause
                while not self._closed:
                    if self._pending is None:
                        self._condition.wait()
                    elif (left := resume - time.monotonic()) > 0:
                        # The pause after a failure: patches meanwhile merge into the one to send.
                        self._condition.wait(left)
                    else:
                        break
                if self._closed:
                    return
                body, self._pending, self._busy = self._pending, None, True
            assert body is not None
            delivered = False
            try:
                delivered = self._send(body)
            finally:
                with self._condition:
                    if not delivered:
                        # Newer fields win over the ones that did not get through.
                        self._pending = {**body, **(self._pending or {})}
                    self._busy = False
                    self._condition.notify_all()
            pause = 0.0 if delivered else min(max(pause * 2, RETRY_FIRST_SECONDS), RETRY_MAX_SECONDS)

    def _send(self, status: dict[str, Any]) -> bool:
        """Whether the patch is done with: taken, or refused for good (logged either way it failed)."""
        try:
            self.client.request("PATCH", self.path, {"status": status}, "application/merge-patch+json")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            passing = _passing(error)
            log.warning(
                "status patch refused by %s: HTTP %d %s%s", self.path, error.code, detail, _RETRYING if passing else ""
            )
            return not passing
        except OSError as error:
            # Refused or reset connections, timeouts, TLS failures, credentials not mounted yet.
            log.warning("status patch to %s failed: %s%s", self.path, error, _RETRYING)
            return False
        except ValueError as error:
            # A malformed address or answer: sending it again would fail the same way.
            log.warning("status patch to %s failed: %s", self.path, error)
        return True


class StatusSink(Protocol):
    """Where a workload's status patches go."""

    def patch(self, status: dict[str, Any]) -> None: ...

    def close(self, timeout: float = ...) -> None: ...


class StatusFile:
    """JSON merge patches into a file, applied at once and atomically: readers never see half a status."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        """The status written so far; empty before the first patch."""
        try:
            status: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return status

    def patch(self, status: dict[str, Any]) -> None:
        with self._lock:
            merged = merge_patch(self.read(), status)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(self.path, json.dumps(merged))

    def close(self, timeout: float = 0.0) -> None:
        """Every patch is written when `patch` returns: nothing to wait for."""


def status_sink(status_file: str | None, namespace: str, plural: str, name: str) -> StatusSink:
    """The file when one is given (local runs), else the object's /status in the cluster."""
    if status_file:
        return StatusFile(status_file)
    return StatusPatcher(namespace, plural, name)


def read_status(client: InClusterClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    """The object's current status; empty when it cannot be read."""
    try:
        body = client.request("GET", object_path(namespace, plural, name) + "/status")
    except REQUEST_ERRORS as error:
        log.warning("could not read the status of %s/%s: %s", plural, name, error)
        return {}
    status: dict[str, Any] = (body or {}).get("status") or {}
    return status


def post_event(client: InClusterClient, involved: dict[str, str], *, type: str, reason: str, message: str) -> None:
    """Posts an Event about `involved` (kind, name, namespace, uid); failures are logged, not raised."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = involved["namespace"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
        "involvedObject": {"apiVersion": API_VERSION, **involved},
        "type": type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "scaleml-monitor"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        client.request("POST", f"/api/v1/namespaces/{namespace}/events", event)
    except REQUEST_ERRORS as error:
        log.warning("could not post the %s Event: %s", reason, error)
