"""One Kubernetes API client per process, logged in the way the operator's kopf side is."""

from __future__ import annotations

import functools
import os

import kubernetes
from kubernetes.client import ApiClient

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
