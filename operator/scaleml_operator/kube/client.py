"""One Kubernetes API client per process, logged in the way the operator's kopf side is."""

from __future__ import annotations

import functools
import os

import kubernetes
from kubernetes.client import ApiClient


@functools.cache
def api_client() -> ApiClient:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration)
    return ApiClient(configuration)
