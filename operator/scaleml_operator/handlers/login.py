"""How the operator authenticates: its ServiceAccount in a cluster, else the kubeconfig in $KUBECONFIG."""

from __future__ import annotations

from typing import Any

import kopf


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own readers look at $KUBECONFIG when called, unlike the kubernetes client's, which
    # fixes the path when first imported.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
