"""Operator-wide kopf settings, applied at start-up whichever way the operator is started."""

from __future__ import annotations

import os
import socket
import zlib
from typing import Any

import kopf

from scaleml_api.base import GROUP
from scaleml_operator.kube.apply import FIELD_MANAGER
from scaleml_operator.kube.client import api_client
from scaleml_operator.kube.peering import ensure_cluster_peering


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


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    # The CRD schemas are strict, so anything kopf kept in .status would be pruned away: its
    # bookkeeping lives in annotations under our own prefix instead.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # A watch that goes silent (a dropped connection through a load balancer) must reconnect
    # rather than leave the operator deaf: bounded server- and client-side watch timeouts.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
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
