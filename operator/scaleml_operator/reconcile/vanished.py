"""Children deleted behind the operator's back: found by a periodic sweep, so that their owners apply them again.

The operator watches the children whose state its status reports (Jobs, Deployments, pods); a
deleted one brings its owner a refresh at once. The others (ServiceAccounts, Services, ConfigMaps,
RoleBindings, autoscalers, disruption budgets) would each cost a watch, and every event of every
one of them a decode, for a deletion that only someone with rights over the namespace can make.
Instead, once per resync period, one metadata-only list per kind, narrowed to what the operator
made, is compared with the children this process applied (reconcile.known): a known child whose
uid the API server no longer has was deleted (or replaced by another of its name), and its owner
is due a full run.

The children known are taken before the lists are read: each of them existed before its apply
returned, so the lists, read after, include it unless it was deleted since. A child the operator
deletes itself meanwhile (an autoscaler turned off) is forgotten first, and costs at most one
needless full run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from scaleml_operator.builders.meta import MANAGED_BY, Owner
from scaleml_operator.kube import apply as kube
from scaleml_operator.reconcile.known import KNOWN, Child

# The kinds the operator applies and does not watch, by kind: their apiVersion.
SWEPT: Final = {
    "ServiceAccount": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}
SELECTOR: Final = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def missing(known: Iterable[Child], present: Mapping[str, set[str]]) -> dict[Owner, list[Child]]:
    """The known children of the swept kinds whose uid is not among those `present` (by kind), by owner."""
    gone: dict[Owner, list[Child]] = {}
    for child in known:
        if child.kind in present and child.uid not in present[child.kind]:
            gone.setdefault(child.owner, []).append(child)
    return gone


def sweep(cluster_wide: bool) -> dict[Owner, list[Child]]:
    """The children deleted since they were applied, by owner, forgotten as known.

    An operator that serves the whole cluster reads one list per kind, of every namespace; one that
    serves some namespaces may read only those, and reads the ones where a child is known.
    """
    known = [child for child in KNOWN.children() if child.kind in SWEPT]
    if not known:
        return {}
    scopes: Iterable[str | None] = [None] if cluster_wide else sorted({child.owner.namespace for child in known})
    present: dict[str, set[str]] = {kind: set() for kind in SWEPT}
    for scope in scopes:
        for kind, api_version in SWEPT.items():
            present[kind] |= kube.uids(api_version, kind, scope, SELECTOR)
    gone = missing(known, present)
    for children in gone.values():
        for child in children:
            KNOWN.forget(child.owner.uid, child.kind, child.name, child.uid)
    return gone
