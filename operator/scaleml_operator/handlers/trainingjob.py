"""TrainingJob: reconcile on its spec, refresh on its Job's changes, and go when a finished Job's time is up."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import kopf

from scaleml_api.base import API_VERSION
from scaleml_api.v1alpha1 import TRAINING_JOB
from scaleml_operator.builders import trainingjob as build
from scaleml_operator.handlers.loop import refresh_soon
from scaleml_operator.handlers.metrics import instrumented
from scaleml_operator.kube import apply as kube
from scaleml_operator.reconcile import cache
from scaleml_operator.reconcile.loop import controlled_by
from scaleml_operator.reconcile.trainingjob import OWNER_LABEL, RECONCILER, WORKER_SELECTOR


@kopf.on.event("batch", "v1", "jobs", labels={**WORKER_SELECTOR, OWNER_LABEL: kopf.PRESENT}, id="job-status")
@instrumented("Job")
async def job_changed(
    type: str, body: kopf.Body, labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    name = labels[OWNER_LABEL]
    if type == "DELETED" and build.job_finished(body):
        training_job = cache.one(kwargs, cache.PARENTS[TRAINING_JOB.kind], (namespace or "", name))
        # Anyone who may create Jobs can copy the label, and a predecessor of the name leaves its
        # Job behind for a while: only a Job this TrainingJob controls is its own.
        if training_job is not None and controlled_by(body, training_job["metadata"]["uid"]):
            # Finished when it went away: removed by the TTL controller (or by hand).
            if training_job["spec"].get("runPolicy", {}).get("ttlSecondsAfterFinished") is not None:
                await asyncio.to_thread(_expire, training_job)
            return
    # Another's Job that went may have been in this one's way; this one's own that went before it
    # finished is made again (reconcile.trainingjob.stale).
    refresh_soon(RECONCILER, name, namespace, memo, kwargs)


def _expire(training_job: Mapping[str, Any]) -> None:
    # The finished Job's time to live is over: the TrainingJob's is too.
    name, namespace = training_job["metadata"]["name"], training_job["metadata"]["namespace"]
    kube.delete(API_VERSION, TRAINING_JOB.kind, name, namespace, uid=training_job["metadata"]["uid"])
