"""Operator-wide kopf settings, applied at start-up whichever way the operator is started."""

from __future__ import annotations

import logging
import os
import socket
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import kopf

from scaleml_operator.kube.apply import FIELD_MANAGER
from scaleml_operator.kube.client import api_client
from scaleml_operator.kube.peering import ensure_cluster_peering
from scaleml_operator.reconcile.driftmonitor import MONITOR_SELECTOR
from scaleml_operator.reconcile.modeldeployment import SERVING_SELECTOR
from scaleml_operator.reconcile.trainingjob import WORKER_SELECTOR

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
NAME_LABEL: Final = "app.kubernetes.io/name"


def label_selector(*selects: Mapping[str, str]) -> str:
    """The label selector of the objects any of `selects` picks (label sets of the same managed-by):
    `app.kubernetes.io/managed-by=scaleml-operator,app.kubernetes.io/name in (a,b)`."""
    (managed_by,) = {select[MANAGED_BY_LABEL] for select in selects}
    names = sorted({select[NAME_LABEL] for select in selects})
    name = f"={names[0]}" if len(names) == 1 else f" in ({','.join(names)})"
    return f"{MANAGED_BY_LABEL}={managed_by},{NAME_LABEL}{name}"


# What the API server sends the operator's watches of built-in kinds: only what the operator made, of
# the components its handlers follow. Without them every Job, Deployment and Pod of the cluster (or of
# the served namespaces) would stream through the operator, to be dropped by kopf's client-side filters
# in the handlers; with them, other teams' objects never leave the API server. The handlers' own label
# filters stay, and each must pick a subset of these (tests/unit/test_watch_selectors.py checks).
WATCH_SELECTORS: Final = {
    ("batch", "v1", "jobs"): label_selector(WORKER_SELECTOR),
    ("apps", "v1", "deployments"): label_selector(SERVING_SELECTOR, MONITOR_SELECTOR),
    ("", "v1", "pods"): label_selector(SERVING_SELECTOR, WORKER_SELECTOR),
}


def default_priority() -> int:
    """A peering priority distinct per replica.

    kopf pauses every operator that sees a peer of the same or higher priority, so replicas that
    all kept the default would all stand still. The pod name (the hostname) differs per replica;
    SCALEML_PEERING_PRIORITY overrides it.
    """
    explicit = os.environ.get("SCALEML_PEERING_PRIORITY")
    if explicit:
        return int(explicit)
    return zlib.crc32(socket.gethostname().encode()) % 1_000_000 + 1


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base for an operator that has no use for it.

    kopf builds each object's "essence" on every event, a deep copy of the whole body, and compares
    it with the one it stored after the last create or update handler, to tell those handlers what
    changed. This operator has none of those handlers (nor timers or daemons, which use it too): each
    kind has one event handler, and full runs follow metadata.generation (handlers.loop). The copy
    was an eighth of the operator's CPU under load; with this, nothing is copied or stored.
    tests/unit/test_kopf_settings.py checks that no handler needs it.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    # A watch that goes silent (a dropped connection through a load balancer) must reconnect
    # rather than leave the operator deaf: bounded server- and client-side watch timeouts.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    for resource, selector in WATCH_SELECTORS.items():
        settings.watching.label_selectors[resource] = selector
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf posts its own log lines about an object as Events on it; only its warnings and errors (a
    # handler that failed) say something a user can act on, and each Event is a request.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = FIELD_MANAGER
    settings.posting.reporting_instance = socket.gethostname()
    settings.posting.event_name_prefix = "scaleml-"
    # Peering name and priority come from the command line (see cli.py); keep-alives stay out of the log.
    settings.peering.stealth = True
    if not settings.peering.standalone:
        # One cluster-wide peering whether the operator serves all namespaces or some: a single
        # object to create, and replicas serving overlapping namespace sets still see each other.
        settings.peering.clusterwide = True
        if ensure_cluster_peering(api_client(), settings.peering.name):
            logger.info("Created the ClusterKopfPeering %r.", settings.peering.name)
