"""Argo CD's health checks for the three kinds, run in Lua 5.1 the way Argo CD runs them.

Argo CD (gopher-lua, a Lua 5.1) sets the object as the global `obj`, runs the script with only the base,
table and package libraries and a few `os` functions, and reads the table it returns: `status` (Healthy,
Progressing, Degraded, Suspended, Missing or Unknown) and `message`. The statuses the scripts judge are
the ones the operator's own status functions write.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from lupa import lua51

from scaleml_api.conditions import SPEC_APPLIED, ConditionStatus, Waiting
from scaleml_api.v1alpha1.modeldeployment import MODEL_VERSION_ANNOTATION, TRITON_CONTAINER
from scaleml_operator.status import acceptance
from scaleml_operator.status import driftmonitor as drift_status
from scaleml_operator.status import modeldeployment as serving_status
from scaleml_operator.status import trainingjob as training_status
from scaleml_operator.status.conditions import set_condition
from tests.support.kustomize import MANIFESTS, build, find

ARGOCD = MANIFESTS / "argocd"
HEALTH = ARGOCD / "health"
KINDS = ("TrainingJob", "ModelDeployment", "DriftMonitor")
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

# What Argo CD leaves out of the Lua state: the string, math, io, debug and coroutine libraries, and
# every os function but the clock's (util/lua/lua.go, OpenSafeOs); and lupa's bridge to Python.
_ARGO_CD_SANDBOX = """
local safe_os = {clock = os.clock, date = os.date, difftime = os.difftime, time = os.time}
getmetatable("").__index = nil
for _, name in ipairs({"string", "math", "io", "debug", "coroutine", "os", "python"}) do
  _G[name] = nil
  package.loaded[name] = nil
end
os = safe_os
"""

Status = dict[str, Any]


def health(kind: str, status: Mapping[str, Any] | None, generation: int = 1) -> dict[str, str]:
    """What Argo CD's health check of `kind` says about an object with `status`."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.execute(_ARGO_CD_SANDBOX)
    obj: dict[str, Any] = {
        "apiVersion": "scaleml.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "churn", "namespace": "ml", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    runtime.globals()["obj"] = runtime.table_from(obj, recursive=True)
    result: Any = runtime.execute((HEALTH / f"scaleml.dev_{kind}.lua").read_text())
    assert lua51.lua_type(result) == "table", result
    verdict = {str(key): str(value) for key, value in result.items()}
    assert set(verdict) == {"status", "message"}, verdict
    assert verdict["status"] in STATUSES
    return verdict


def patched(status: Status, *patches: Mapping[str, Any]) -> Status:
    """`status` after the operator's merge patches."""
    result = dict(status)
    for patch in patches:
        result.update(patch)
    return result


def accepted(generation: int = 1, initial_phase: str | None = "Pending") -> Status:
    return patched({}, acceptance.accepted({}, generation=generation, initial_phase=initial_phase, now=NOW))


def rejected() -> Status:
    problem = "spec.model.params.hiddenSizes[1]: Input should be a valid integer"
    return patched({}, acceptance.rejected({}, generation=1, problem=problem, now=NOW))


def with_condition(status: Status, type_: str, value: ConditionStatus, reason: str, message: str) -> Status:
    conditions = set_condition(
        status.get("conditions", []),
        type=type_,
        status=value,
        reason=reason,
        message=message,
        generation=1,
        now=NOW,
    )
    return patched(status, {"conditions": conditions})


# ------------------------------------------------------------------------------------------ TrainingJob


def _job(active: int = 0, ready: int = 0, condition: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"active": active, "ready": ready, "startTime": "2026-05-01T11:00:00Z"}
    if condition:
        status["conditions"] = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded"}]
    return {"metadata": {"name": "churn"}, "spec": {"parallelism": 2}, "status": status}


def _failed_pod() -> dict[str, Any]:
    terminated = {
        "exitCode": 3,
        "message": "CUDA error: an illegal memory access",
        "finishedAt": "2026-05-01T11:30:00Z",
    }
    return {"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": terminated}}]}}


def _unschedulable_pod() -> dict[str, Any]:
    scheduled = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
    }
    return {"metadata": {"name": "churn-1-x"}, "status": {"phase": "Pending", "conditions": [scheduled]}}


def training(job: dict[str, Any] | None, pods: list[dict[str, Any]] | None = None, phase: str | None = None) -> Status:
    status = patched(accepted(), {"phase": phase}) if phase else accepted()
    return patched(status, training_status.observed(status, job=job, pods=pods or [], generation=1, now=NOW))


@pytest.mark.parametrize(
    ("status", "expected", "said"),
    [
        pytest.param(None, "Progressing", "Waiting for the operator", id="no status yet"),
        pytest.param(accepted(), "Progressing", "Waiting for the workers", id="accepted"),
        pytest.param(rejected(), "Degraded", "hiddenSizes[1]", id="invalid spec"),
        pytest.param(training(None), "Progressing", "Waiting for the workers", id="pending"),
        pytest.param(training(_job(active=2, ready=2)), "Progressing", "2/2 workers running", id="running"),
        pytest.param(
            training(_job(active=2), [_unschedulable_pod()]),
            "Progressing",
            "start: 0/2 workers running. Pod churn-1-x: Unschedulable: 0/5 nodes",
            id="unschedulable",
        ),
        pytest.param(
            training(_job(active=2, ready=1), [_failed_pod()], phase="Running"),
            "Progressing",
            "illegal memory access",
            id="restarting",
        ),
        pytest.param(
            training(_job(active=2, ready=1), [_unschedulable_pod()], phase="Running"),
            "Progressing",
            "Waiting for workers to run again: 1/2 workers running. Pod churn-1-x: Unschedulable",
            id="replacement unschedulable",
        ),
        pytest.param(
            patched(training(_job(condition="Complete")), {"modelVersion": 4}), "Healthy", "version 4", id="succeeded"
        ),
        pytest.param(
            training(_job(condition="Failed"), [_failed_pod()]), "Degraded", "BackoffLimitExceeded", id="failed"
        ),
        pytest.param(training(_job(condition="Suspended")), "Suspended", "suspended", id="suspended"),
        pytest.param(
            with_condition(
                training(_job(active=2, ready=2)),
                SPEC_APPLIED,
                "False",
                "ImmutableWhileRunning",
                "spec.resources.workers cannot change while the Job runs.",
            ),
            "Degraded",
            "cannot change",
            id="spec not applied",
        ),
    ],
)
def test_training_job_health(status: Status | None, expected: str, said: str) -> None:
    verdict = health("TrainingJob", status)
    assert verdict["status"] == expected
    assert said in verdict["message"]


# ------------------------------------------------------------------------------------------ ModelDeployment


def _deployment(replicas: int = 2, updated: int = 2, available: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn-triton", "generation": 1, "annotations": {MODEL_VERSION_ANNOTATION: "3"}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "replicas": max(updated, replicas),
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
        },
    }


def _crashing_triton() -> dict[str, Any]:
    terminated = {"exitCode": 1, "message": "E0501 model churn failed to load: missing model.pt"}
    container = {
        "name": TRITON_CONTAINER,
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": terminated},
    }
    return {"metadata": {"name": "churn-triton-abc"}, "status": {"containerStatuses": [container]}}


def serving(
    deployment: dict[str, Any] | None, pods: list[dict[str, Any]] | None = None, waiting: Waiting | None = None
) -> Status:
    status = accepted()
    patch = serving_status.observed(
        status,
        deployment=deployment,
        pods=pods or [],
        waiting=waiting,
        version=3,
        endpoints={},
        selector="app.kubernetes.io/instance=churn",
        generation=1,
        now=NOW,
    )
    return patched(status, patch)


def held(status: Status) -> Status:
    """`status` with version 4 held back by the gates."""
    message = "Version 4 failed: maxRegression: accuracy 0.8 against 0.9 of served version 3. Version 3 stays served."
    return patched(with_condition(status, "Promoted", "False", "GateFailed", message), {"candidateVersion": 4})


@pytest.mark.parametrize(
    ("status", "expected", "said"),
    [
        pytest.param(None, "Progressing", "Waiting for the operator", id="no status yet"),
        pytest.param(rejected(), "Degraded", "hiddenSizes[1]", id="invalid spec"),
        pytest.param(
            serving(
                None, waiting=Waiting("WaitingForModel", "TrainingJob churn has not exported a model version yet.")
            ),
            "Progressing",
            "has not exported",
            id="waiting for a model",
        ),
        pytest.param(serving(_deployment()), "Healthy", "2/2 replicas ready", id="ready"),
        pytest.param(serving(_deployment(updated=1, available=2)), "Progressing", "1 of 2", id="rolling out"),
        pytest.param(serving(_deployment(available=0)), "Progressing", "available", id="no replica ready yet"),
        pytest.param(
            serving(_deployment(available=0), [_unschedulable_pod()]),
            "Progressing",
            "0 of 2 updated replicas are available. Pod churn-1-x: Unschedulable: 0/5 nodes",
            id="pods that cannot be scheduled",
        ),
        pytest.param(
            serving(_deployment(updated=1, available=2), [_unschedulable_pod()]),
            "Progressing",
            "The previous template's pods still serve; the newest template's cannot start. Pod churn-1-x: "
            "Unschedulable",
            id="a rollout whose new pods cannot be scheduled",
        ),
        pytest.param(
            serving(_deployment(updated=1, available=1), [_crashing_triton()]),
            "Degraded",
            "failed to load",
            id="new version does not load",
        ),
        pytest.param(
            serving(_deployment(available=0), [_crashing_triton()]), "Degraded", "failed to load", id="failed"
        ),
        pytest.param(serving(_deployment(replicas=0, updated=0, available=0)), "Healthy", "zero", id="scaled to zero"),
        pytest.param(
            held(serving(_deployment())),
            "Suspended",
            "Version 4 failed: maxRegression",
            id="a new version held back by the gates",
        ),
        pytest.param(
            held(serving(_deployment(available=0), [_crashing_triton()])),
            "Degraded",
            "failed to load",
            id="failing while a version is held",
        ),
        pytest.param(
            with_condition(
                serving(_deployment()),
                SPEC_APPLIED,
                "False",
                "ChildRejected",
                "HorizontalPodAutoscaler churn: spec.metrics[1].pods.metric.name: Required value",
            ),
            "Degraded",
            "HorizontalPodAutoscaler",
            id="spec not applied",
        ),
    ],
)
def test_model_deployment_health(status: Status | None, expected: str, said: str) -> None:
    verdict = health("ModelDeployment", status)
    assert verdict["status"] == expected
    assert said in verdict["message"]


# ------------------------------------------------------------------------------------------ DriftMonitor


def monitoring(
    deployment: dict[str, Any] | None,
    waiting: Waiting | None = None,
    drift: bool | None = None,
    retraining: bool = False,
) -> Status:
    status = accepted(initial_phase=None)
    status = patched(
        status,
        drift_status.observed(
            status, deployment=deployment, waiting=waiting, reference_version=3, generation=1, now=NOW
        ),
    )
    if drift is not None:
        results = {"driftDetected": drift, "driftScore": 0.62, "driftedFeatures": ["tenure"], "windowSize": 5000}
        status = patched(status, results)
        status = patched(status, {"conditions": drift_status.drift_condition(status, generation=1, now=NOW)})
    if retraining:
        conditions = drift_status.retraining(
            status,
            active=True,
            reason="TrainingJobRunning",
            message="TrainingJob churn-retrain-1 is running.",
            generation=1,
            now=NOW,
        )
        status = patched(status, {"conditions": conditions})
    return status


RUNNING_MONITOR = {"status": {"availableReplicas": 1}}


@pytest.mark.parametrize(
    ("status", "expected", "said"),
    [
        pytest.param(None, "Progressing", "Waiting for the operator", id="no status yet"),
        pytest.param(rejected(), "Degraded", "hiddenSizes[1]", id="invalid spec"),
        pytest.param(
            monitoring(None, Waiting("ModelDeploymentNotFound", "ModelDeployment churn does not exist (yet).")),
            "Progressing",
            "does not exist (yet)",
            id="target not there yet",
        ),
        pytest.param(
            monitoring(None, Waiting("CaptureDisabled", "ModelDeployment churn does not capture requests.")),
            "Degraded",
            "does not capture",
            id="target captures nothing",
        ),
        pytest.param(monitoring({"status": {}}), "Progressing", "not ready yet", id="monitor starting"),
        pytest.param(monitoring(RUNNING_MONITOR, drift=False), "Healthy", "running", id="no drift"),
        pytest.param(monitoring(RUNNING_MONITOR, drift=True), "Healthy", "Drift in tenure", id="drift is not a fault"),
        pytest.param(
            monitoring(RUNNING_MONITOR, drift=True, retraining=True),
            "Healthy",
            "churn-retrain-1 is running",
            id="retraining",
        ),
    ],
)
def test_drift_monitor_health(status: Status | None, expected: str, said: str) -> None:
    verdict = health("DriftMonitor", status)
    assert verdict["status"] == expected
    assert said in verdict["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_status_older_than_the_spec_is_progressing(kind: str) -> None:
    ready = serving(_deployment()) if kind == "ModelDeployment" else accepted()
    verdict = health(kind, ready, generation=2)
    assert verdict == {"status": "Progressing", "message": "Waiting for the operator to act on generation 2."}


def test_the_argocd_cm_patch_carries_each_script_under_its_key() -> None:
    (config,) = build(ARGOCD)
    assert (config["kind"], config["metadata"]["name"], config["metadata"]["namespace"]) == (
        "ConfigMap",
        "argocd-cm",
        "argocd",
    )
    # Argo CD reads only the argocd-cm that carries this label.
    assert config["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert config["data"] == {
        f"resource.customizations.health.scaleml.dev_{kind}": (HEALTH / f"scaleml.dev_{kind}.lua").read_text()
        for kind in KINDS
    }
    assert sorted(path.name for path in HEALTH.iterdir()) == sorted(f"scaleml.dev_{kind}.lua" for kind in KINDS)


def test_the_example_application_points_at_an_overlay_and_components_that_exist() -> None:
    application = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    source = application["spec"]["source"]
    path = MANIFESTS.parent / source["path"]
    assert (path / "kustomization.yaml").is_file()
    for component in source["kustomize"]["components"]:
        assert ((path / component).resolve() / "kustomization.yaml").is_file(), component
    assert (
        application["spec"]["destination"]["namespace"]
        == find(build(path), "Namespace", "scaleml-system")["metadata"]["name"]
    )
    assert "ServerSideApply=true" in application["spec"]["syncPolicy"]["syncOptions"]
