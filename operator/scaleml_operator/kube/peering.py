"""The kopf peering object the operator replicas meet in.

The operator creates it itself: applied in the same `kubectl apply` as the peering CRD, the object
would be refused because the CRD is not established yet.
"""

from __future__ import annotations

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

HTTP_CONFLICT = 409


def ensure_cluster_peering(client: ApiClient, name: str) -> bool:
    """Creates the ClusterKopfPeering `name`; False when it existed already."""
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
    try:
        CustomObjectsApi(client).create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
    except ApiException as error:
        if error.status == HTTP_CONFLICT:
            return False
        raise
    return True
