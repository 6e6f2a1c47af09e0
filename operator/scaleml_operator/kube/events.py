"""Posting Events on the objects the operator reconciles (the one way every Event goes out), and
reading a controller's about a child.

Core v1 Events, as `kubectl describe` and `kubectl get events` show them, with the operator as
their reporting component. A failure to post is logged and swallowed: an Event is a notice, and
losing one must not undo or repeat the reconcile that caused it.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from scaleml_operator.kube.apply import FIELD_MANAGER, NamespaceTerminatingError, RefusedError, checked, create
from scaleml_operator.kube.client import request, resource
from scaleml_operator.status.acceptance import event_message
from scaleml_operator.status.conditions import Event

log = logging.getLogger(__name__)

NAME_PREFIX: Final = "scaleml-"
# An object's uid, as the API server makes them: the only form let into a field selector.
_UID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# A controller repeats an Event as a count on one object, so a few are all there is to read.
_READ_AT_MOST: Final = 20
# Alerts key on these: a version held back by a gate, a failed job, a refused retraining.
WARNINGS = Counter(
    "scaleml_operator_warning_events_total",
    "Warning Events the operator posted, by the kind of the object and the Event's reason.",
    ["kind", "reason"],
)


def event_body(involved: Mapping[str, Any], event: Event, now: datetime, instance: str) -> dict[str, Any]:
    """The Event object about `involved` (an object as the API returns it)."""
    meta = involved["metadata"]
    moment = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": meta["namespace"], "generateName": NAME_PREFIX},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": event_message(event.message),
        "action": event.reason,
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": instance,
        # The "From" column of `kubectl describe`.
        "source": {"component": FIELD_MANAGER},
        "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventTime": moment,
        "count": 1,
    }


def post(involved: Mapping[str, Any], events: Iterable[Event]) -> None:
    """Posts each of `events` about `involved`."""
    for event in events:
        body = event_body(involved, event, datetime.now(UTC), socket.gethostname())
        meta = involved["metadata"]
        # The operator's log at INFO is these lines: what changed for a user, one line per transition.
        # The message may quote a workload's own words (its termination message): written as a
        # literal, a line break in it cannot start a line of its own in the log.
        told = _one_line(body["message"])
        log.info("%s %s/%s: %s: %s", involved["kind"], meta["namespace"], meta["name"], event.reason, told)
        if event.type == "Warning":
            WARNINGS.labels(involved["kind"], event.reason).inc()
        try:
            create(body)
        except NamespaceTerminatingError:
            return  # the object goes with its namespace: no one is left to read the Event
        except (ApiException, RefusedError) as error:
            reason = error.reason if isinstance(error, ApiException) else str(error)
            log.warning("Could not post Event %s on %s: %s", event.reason, involved["metadata"]["name"], reason)


def _one_line(message: str) -> str:
    return message if message.isprintable() else repr(message)


def about(namespace: str, uid: str, reason: str) -> list[dict[str, Any]]:
    """The Events of `reason` about the object `uid` in `namespace`, whoever posted them.

    One request, narrowed by the API server's field selectors. A read the operator may not make (an
    older install's rights) or that fails is none: the Events explain, and the status goes on without.
    """
    checked(None, namespace)
    if not _UID.match(uid) or not reason.isalnum():
        raise ValueError(f"not a uid and a reason: {uid!r}, {reason!r}")
    query = [("fieldSelector", f"involvedObject.uid={uid},reason={reason}"), ("limit", str(_READ_AT_MOST))]
    try:
        found = request("GET", resource("v1", "Event").path(namespace=namespace), query=query)
    except ApiException as error:
        log.warning("Could not read the %s Events of %s in %s: %s", reason, uid, namespace, error.reason)
        return []
    return list(found.get("items") or ())
