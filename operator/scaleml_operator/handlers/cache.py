"""The watches' caches the reconcile reads (see reconcile.cache): kopf indexes of the operator's objects and children.

The child watches are the ones WATCH_SELECTORS narrows to what the operator made (handlers.settings),
so these hold nothing of other teams' objects.

Index functions (here and in the other handler modules) are coroutines although they never wait:
kopf runs a plain function in a thread of its executor, a hop that costs more than the function
itself, and it calls every index of a kind on every event of that kind.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import kopf

from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import KINDS, TRAINING_JOB
from scaleml_operator.builders.retraining import RETRAINED_BY_LABEL
from scaleml_operator.handlers.loop import HANDLED
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile import driftmonitor as monitoring
from scaleml_operator.reconcile import modeldeployment as serving
from scaleml_operator.reconcile import trainingjob as training
from scaleml_operator.reconcile.known import KNOWN
from scaleml_operator.reconcile.own_writes import OWN_WRITES

Index = Callable[..., Coroutine[Any, Any, dict[cache.Key, Any]]]
Projection = Callable[[kopf.Body], dict[str, Any]]


def _by_name(project: Projection) -> Index:
    async def index(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> dict[cache.Key, Any]:
        return {(namespace or "", name or ""): project(body)}

    return index


def _register(kind: AnyKind) -> None:
    kopf.index(*kind.group_version, id=cache.PARENTS[kind.kind])(_by_name(cache.slim))

    @kopf.on.event(*kind.group_version, id="forget-children", when=lambda type, **_: type == "DELETED")
    async def forget_children(uid: str | None, **_: Any) -> None:
        # What the process holds of the object goes with it: the generation it handled, the status it
        # last wrote and its children's uids (the garbage collector deletes the children themselves).
        HANDLED.forget(uid or "")
        OWN_WRITES.forget(uid or "")
        KNOWN.forget_owner(uid or "")


for _kind in KINDS:
    _register(_kind)

# kopf's label filters: values, or kopf.PRESENT.
Labels = dict[str, Any]
TRAINING: Labels = {**training.WORKER_SELECTOR, training.OWNER_LABEL: kopf.PRESENT}
SERVING: Labels = {**serving.SERVING_SELECTOR, serving.OWNER_LABEL: kopf.PRESENT}
MONITORING: Labels = {**monitoring.MONITOR_SELECTOR, monitoring.OWNER_LABEL: kopf.PRESENT}
kopf.index("batch", "v1", "jobs", labels=TRAINING, id=cache.JOBS)(_by_name(cache.without_template))
kopf.index("apps", "v1", "deployments", labels=SERVING, id=cache.SERVING_DEPLOYMENTS)(_by_name(cache.without_template))
kopf.index("apps", "v1", "deployments", labels=MONITORING, id=cache.MONITOR_DEPLOYMENTS)(
    _by_name(cache.without_template)
)


def _by_owner(label: str, project: Callable[[kopf.Body], Any]) -> Index:
    async def index(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[cache.Key, Any]:
        return {(namespace or "", labels[label]): project(body)}

    return index


kopf.index("", "v1", "pods", labels=TRAINING, id=cache.TRAINING_PODS)(
    _by_owner(training.OWNER_LABEL, cache.pod_summary)
)
kopf.index("", "v1", "pods", labels=SERVING, id=cache.SERVING_PODS)(_by_owner(serving.OWNER_LABEL, cache.pod_summary))


def _name(body: kopf.Body) -> str:
    return str(body["metadata"]["name"])


# A DriftMonitor's retraining jobs, by name only: the TrainingJobs themselves are in their own index.
# The retraining step reads them on every window the monitor reports, and these few keys spare it
# a walk over every TrainingJob.
kopf.index(*TRAINING_JOB.group_version, labels={RETRAINED_BY_LABEL: kopf.PRESENT}, id=cache.RETRAININGS)(
    _by_owner(RETRAINED_BY_LABEL, _name)
)
