"""DriftMonitor: reconcile on its spec; refresh on each tested window, its target, its Deployment and retraining."""

from __future__ import annotations

from typing import Any, Final

import kopf

from scaleml_api.v1alpha1 import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.trainingjob import FINISHED_PHASES
from scaleml_operator.builders.retraining import RETRAINED_BY_LABEL
from scaleml_operator.handlers.loop import refresh_soon
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.reconcile.driftmonitor import MONITOR_SELECTOR, OWNER_LABEL, RECONCILER

# (namespace, ModelDeployment) -> the DriftMonitors watching it.
Watchers = kopf.Index[tuple[str, str], str]


# A coroutine, as every index function: see handlers.cache.
@kopf.index(*DRIFT_MONITOR.group_version, id="drift_monitors_by_target")
async def drift_monitors_by_target(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, str]:
    return {(namespace or "", (spec.get("target") or {}).get("modelDeployment", "")): name}


# The monitor pod writes each window's results: when it tested (second precision), and the runs of
# drifted and degraded windows that the retraining policy counts. The operator writes none of these
# fields: a change of them is the pod's, and the retraining policy may have to act on it.
WINDOW_FIELDS: Final = (
    "lastCheckTime",
    "consecutiveDriftedWindows",
    "driftSince",
    "consecutiveDegradedWindows",
    "degradedSince",
)
# uid -> the window fields as last seen: the pod's changes are told apart from the operator's own writes.
_windows: dict[str, tuple[Any, ...]] = {}


@kopf.on.event(*DRIFT_MONITOR.group_version, id="window-tested")
@instrumented(DRIFT_MONITOR.kind)
async def window_tested(
    type: str | None, name: str, namespace: str | None, uid: str, status: kopf.Status, memo: kopf.Memo, **kwargs: Any
) -> None:
    if type == "DELETED":
        _windows.pop(uid, None)
        return
    window = tuple(status.get(field) for field in WINDOW_FIELDS)
    seen = _windows.get(uid)
    _windows[uid] = window
    # Objects of kopf's initial listing (type None) get a full run of their own (handlers.loop).
    if type is not None and seen is not None and seen != window:
        refresh_soon(RECONCILER, name, namespace, memo, kwargs)


@kopf.on.event("apps", "v1", "deployments", labels={**MONITOR_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="monitor-status")
@instrumented("Deployment")
async def monitor_changed(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    refresh_soon(RECONCILER, labels[OWNER_LABEL], namespace, memo, kwargs)


@kopf.on.event(*MODEL_DEPLOYMENT.group_version, id="target-changed")
@instrumented(MODEL_DEPLOYMENT.kind)
async def target_changed(
    name: str, namespace: str | None, memo: kopf.Memo, drift_monitors_by_target: Watchers, **kwargs: Any
) -> None:
    """A ModelDeployment changed (capture turned on, a new version served): its monitors follow."""
    for monitor in set(drift_monitors_by_target.get((namespace or "", name), ())):
        refresh_soon(RECONCILER, monitor, namespace, memo, kwargs)


@kopf.on.event(
    *TRAINING_JOB.group_version,
    labels={RETRAINED_BY_LABEL: kopf.PRESENT},
    when=lambda type, status, **_: type != "DELETED" and status.get("phase") in FINISHED_PHASES,
    id="retraining-finished",
)
@instrumented(TRAINING_JOB.kind)
async def retraining_finished(labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A retraining TrainingJob ended: the monitor's Retraining condition ends, and the policy may act again."""
    refresh_soon(RECONCILER, labels[RETRAINED_BY_LABEL], namespace, memo, kwargs)
