"""The bench's own client of kube-apiserver: plain HTTPS and JSON, and many objects created at a set concurrency.

On two cores shared with the control plane and the operator, the bench's own requests must cost
little: the standard library's http.client, one kept-alive connection per thread, no discovery.
The same client creates the plain children and the custom objects, so both runs pay the same per
request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

JSON: Final = "application/json"
# Names and metadata only: what "does it exist" needs, at a fraction of the bytes of the full objects
# (a watch's events then carry PartialObjectMetadata too).
METADATA: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
PLURALS: Final = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Job": "jobs",
    "ModelDeployment": "modeldeployments",
    "Namespace": "namespaces",
    "PersistentVolume": "persistentvolumes",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "TrainingJob": "trainingjobs",
}
# Reads and deletes may be sent again after a kept-alive connection turned out closed; a create may not.
_IDEMPOTENT: Final = frozenset({"GET", "DELETE"})


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def collection(api_version: str, plural: str, namespace: str | None = None) -> str:
    """The URL path of a collection: /api/v1/... for the core group, /apis/<group>/<version>/... otherwise."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


class Api:
    """JSON requests to one API server, as the identity `context` carries (the admin's client certificate),
    or as the one of `token` (a ServiceAccount's)."""

    def __init__(self, server: str, context: ssl.SSLContext, token: str | None = None) -> None:
        url = urllib.parse.urlsplit(server)
        self._host, self._port = url.hostname or "127.0.0.1", url.port
        self._context = context
        self._authorization = {"Authorization": f"Bearer {token}"} if token else {}
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPSConnection:
        connection: http.client.HTTPSConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPSConnection(self._host, self._port, context=self._context, timeout=60)
            self._local.connection = connection
        return connection

    def request(self, method: str, path: str, body: Any = None, *, accept: str = JSON) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": accept, "Content-Type": JSON, **self._authorization}
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                self._local.connection = None
                if attempt or method not in _IDEMPOTENT:
                    raise
                continue
            if response.status >= 300:
                raise ApiError(response.status, f"{method} {path}: HTTP {response.status}: {payload[:400]!r}")
            return json.loads(payload) if payload else None
        raise AssertionError("unreachable: the second attempt returns or raises")

    def create(self, manifest: dict[str, Any]) -> None:
        meta = manifest["metadata"]
        self.request(
            "POST", collection(manifest["apiVersion"], PLURALS[manifest["kind"]], meta.get("namespace")), manifest
        )

    def items(self, api_version: str, plural: str, namespace: str) -> list[dict[str, Any]]:
        # An empty list may come with "items": null.
        found: list[dict[str, Any]] = self.request("GET", collection(api_version, plural, namespace))["items"] or []
        return found

    def exists(self, path: str) -> bool:
        try:
            self.request("GET", path, accept=METADATA)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def watch(
        self, path: str, on_event: Callable[[str, dict[str, Any]], None], *, accept: str, timeout: float
    ) -> Watch:
        """A watch of the collection at `path`, started: events from now on go to `on_event` (see Watch)."""
        return Watch(
            http.client.HTTPSConnection(self._host, self._port, context=self._context), path, on_event, accept, timeout
        )

    def delete(self, path: str) -> None:
        try:
            self.request("DELETE", path)
        except ApiError as error:
            if error.status != 404:
                raise


class Watch:
    """One watch, read in a thread of its own, which calls `on_event(type, object)` for each event.

    The constructor returns once the API server answered the request, i.e. once the watch is in
    place: nothing that happens afterwards is missed. `close()` ends it; `error` holds what ended it
    before that, if anything did (an ERROR event, a broken connection).
    """

    def __init__(
        self,
        connection: http.client.HTTPSConnection,
        path: str,
        on_event: Callable[[str, dict[str, Any]], None],
        accept: str,
        timeout: float,
    ) -> None:
        self._on_event = on_event
        self._connection = connection
        connection.connect()
        # Kept: closing the connection does not wake a thread blocked reading it, shutting the socket down does.
        self._socket = connection.sock
        connection.request("GET", f"{path}?watch=true&timeoutSeconds={math.ceil(timeout)}", headers={"Accept": accept})
        self._response = connection.getresponse()
        if self._response.status != 200:
            raise ApiError(self._response.status, f"WATCH {path}: HTTP {self._response.status}")
        self.error: BaseException | None = None
        self.events = 0
        self.received = 0
        self._closed = False
        self._thread = threading.Thread(target=self._read, name=f"watch {path}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while line := self._response.readline():
                self.events += 1
                self.received += len(line)
                event = json.loads(line)
                if event["type"] == "ERROR":
                    raise ApiError(event["object"].get("code", 0), f"watch: {event['object'].get('message')}")
                self._on_event(event["type"], event["object"])
            if not self._closed:
                raise ApiError(0, "the watch ended before it was closed")
        except Exception as error:  # handed to the thread that waits on the watch
            if not self._closed:
                self.error = error

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._connection.close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass(frozen=True)
class Created:
    """Wall-clock times (time.time(), as the audit log has them) around creating one group of objects."""

    started: float
    finished: float


def create_groups(api: Api, groups: Sequence[Sequence[dict[str, Any]]], concurrency: int) -> list[Created]:
    """Creates each group's objects in their order, `concurrency` groups at a time.

    A fresh pool each call: its threads open fresh connections, so that no create goes out on a
    kept-alive connection the server has closed meanwhile (a create is never sent twice).
    """

    def create(group: Sequence[dict[str, Any]]) -> Created:
        started = time.time()
        for manifest in group:
            api.create(manifest)
        return Created(started, time.time())

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="create") as pool:
        return list(pool.map(create, groups))
