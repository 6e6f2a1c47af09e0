"""One Kubernetes API client per process, logged in the way the operator's kopf side is; its dynamic
client, for discovery; and `request`, which the operator's reads and writes go through."""

from __future__ import annotations

import functools
import json
import os
import threading
from typing import Any

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

# Connections kept open to the API server: one per reconcile thread (OperatorConfig.workers) and
# then some, so that no thread opens and drops connections of its own.
CONNECTIONS = 32


@functools.cache
def api_client() -> ApiClient:
    configuration = kubernetes.client.Configuration()
    configuration.connection_pool_maxsize = CONNECTIONS
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return ApiClient(configuration)


_client_lock = threading.Lock()
_dynamic: DynamicClient | None = None


def dynamic_client() -> DynamicClient:
    """The process's one client. It caches discovery on disk as well as in memory: two threads building
    it at once would read the file while the other writes it, so it is built once, under a lock."""
    global _dynamic
    with _client_lock:
        if _dynamic is None:
            _dynamic = DynamicClient(api_client())
        return _dynamic


_discovery_lock = threading.Lock()
# (apiVersion, kind) -> its API resource: the few kinds the operator writes.
_resources: dict[tuple[str, str], Any] = {}


def resource(api_version: str, kind: str) -> Any:
    """The API resource of a kind, discovered once per process.

    The dynamic client discovers a group version the first time a search needs it, and every thread
    that searches meanwhile fetches it too: a new operator facing a thousand objects sent 146
    discovery requests. One thread discovers, the others wait for it.
    """
    key = (api_version, kind)
    found = _resources.get(key)
    if found is None:
        with _discovery_lock:
            found = _resources.get(key)
            if found is None:
                found = _resources[key] = dynamic_client().resources.get(api_version=api_version, kind=kind)
    return found


def request(
    method: str,
    path: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    accept: str = "application/json",
) -> dict[str, Any]:
    """One request, and its JSON answer as plain dicts; ApiException for any answer but a 2xx.

    Not through the dynamic client's request: it wraps every answer in ResourceInstance objects
    (which the reconcile then turns back into dicts) and formats a traceback for every error it
    translates, each 404 included. Under load that was a fifth of the operator's CPU.
    """
    client = api_client()
    serialized = client.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params={"Accept": accept, "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = client.call_api(*serialized)
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)
    return json.loads(data)  # type: ignore[no-any-return]
