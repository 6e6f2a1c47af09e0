"""A child the API server refuses becomes a condition and an Event, not a crash loop or an endless retry.

A cluster's own admission refusing a child the operator renders is the realistic case: the CRD cannot
know the cluster's policies or quotas, so the spec is accepted, and only the child's write fails. A
child refused as invalid (422) waits for a spec change; one denied for now (403: a ResourceQuota used
up, a policy of the cluster's admins) is tried again once per resync period, and the condition clears
once it goes through. Either way the other children are applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from tests.e2e.scenario import condition, export, model_deployment, status, training_job
from tests.support.kubectl import Kubectl
from tests.support.policies import refusal
from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

# The periodic resync is what tries a denied child again: every few seconds here, not to wait a minute.
OPERATOR_FLAGS = ("--resync-seconds=5",)

Refuse = Callable[..., str]


@pytest.fixture
def refuse(kubectl: Kubectl, ml_namespace: str) -> Iterator[Refuse]:
    """`refuse(probe, resource, message, reason=None, expression="false")`: a ValidatingAdmissionPolicy of
    the cluster's admin that refuses, in the test's namespace, the creation and update of the objects of the
    probe's kind (`resource`, its plural) for which `expression` fails, with `message` and the HTTP status
    of `reason` (default Invalid: 422); returns its name, once the API server enforces it on the probe.
    Every one made is removed after the test."""
    made: list[str] = []

    def policy(
        probe: dict[str, Any], resource: str, message: str, reason: str | None = None, expression: str = "false"
    ) -> str:
        name = f"no-{resource}-{ml_namespace}"
        group = probe["apiVersion"].rpartition("/")[0]
        rule = {"apiGroups": [group], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": [resource]}
        made.append(name)
        kubectl.apply(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": list(refusal(name, ml_namespace, rule, expression, message, reason)),
            }
        )

        def refusing() -> bool:
            # The API server loads a new policy a moment later: wait until it refuses one (a dry run).
            result = kubectl.apply(probe, "-n", ml_namespace, "--dry-run=server", check=False)
            return message in result.stderr

        wait_for(refusing, 60, f"the admission policy {name} to take effect")
        return name

    yield policy
    for name in made:
        _lift(kubectl, name)


def _lift(kubectl: Kubectl, policy: str) -> None:
    kubectl.run("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy, "--ignore-not-found")


_PROBE_JOB = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"name": "probe"},
    "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "probe"}]}}},
}
_PROBE_CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}}


def _spec_applied(kubectl: Kubectl, resource: str, namespace: str, reason: str) -> dict[str, Any] | None:
    applied = condition(status(kubectl, resource, "churn", namespace), "SpecApplied")
    return applied if applied.get("reason") == reason else None


def _warnings(kubectl: Kubectl, namespace: str, kind: str) -> list[str]:
    """The SpecNotApplied Events on objects of `kind` in `namespace`."""
    selector = f"reason=SpecNotApplied,involvedObject.kind={kind}"
    return kubectl.run("get", "events", "-n", namespace, "--field-selector", selector, "-o", "name").stdout.split()


def test_a_job_that_admission_refuses_is_reported_once_and_not_retried(
    kubectl: Kubectl, ml_namespace: str, refuse: Refuse
) -> None:
    refuse(_PROBE_JOB, "jobs", "batch Jobs are not allowed here")
    training_job(kubectl, ml_namespace)
    refused = wait_for(
        partial(_spec_applied, kubectl, "trainingjob", ml_namespace, "ChildRejected"),
        60,
        "SpecApplied=False ChildRejected",
    )
    assert "Job churn" in refused["message"]
    assert "batch Jobs are not allowed here" in refused["message"]
    kubectl.await_event_reasons(ml_namespace, "TrainingJob", {"SpecNotApplied"})
    assert kubectl.find("job", "churn", ml_namespace) is None
    # The children before it were applied, and the status says what the object is waiting for.
    assert kubectl.find("serviceaccount", "churn-trainer", ml_namespace) is not None
    assert status(kubectl, "trainingjob", "churn", ml_namespace)["phase"] == "Pending"
    # No retry loop: the handler finished (kopf keeps a failed, to-be-retried handler's state in
    # the object's annotations), and one Warning said what is wrong.
    annotations = kubectl.get("trainingjob", "churn", ml_namespace)["metadata"].get("annotations") or {}
    assert not [key for key in annotations if key.startswith("scaleml.dev/reconcile")], annotations
    assert len(_warnings(kubectl, ml_namespace, "TrainingJob")) == 1


@dataclass(frozen=True)
class Owned:
    """An object of the examples and its children: the Service the quota denies, one applied after it."""

    resource: str
    kind: str
    service: str
    after: tuple[str, str]
    make: Callable[[Kubectl, str], None]


def _training(kubectl: Kubectl, namespace: str) -> None:
    training_job(kubectl, namespace)


def _serving(kubectl: Kubectl, namespace: str) -> None:
    training_job(kubectl, namespace)
    export(kubectl, namespace, 1)
    kubectl.apply(model_deployment(), "-n", namespace)


OWNED = [
    pytest.param(Owned("trainingjob", "TrainingJob", "churn-workers", ("job", "churn"), _training), id="TrainingJob"),
    pytest.param(
        Owned("modeldeployment", "ModelDeployment", "churn", ("deployment", "churn-triton"), _serving),
        id="ModelDeployment",
    ),
]


def _no_services(kubectl: Kubectl, namespace: str) -> None:
    """A ResourceQuota of `services: 0`, once the quota controller has counted it (admission needs that)."""
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"}}
    kubectl.apply({**quota, "spec": {"hard": {"services": "0"}}}, "-n", namespace)

    def counted() -> bool:
        found = kubectl.find("resourcequota", "no-services", namespace) or {}
        return "services" in (found.get("status") or {}).get("used", {})

    wait_for(counted, 60, "the quota to be counted")


def _cleared(kubectl: Kubectl, resource: str, namespace: str) -> bool:
    return condition(status(kubectl, resource, "churn", namespace), "SpecApplied").get("status") == "True"


@pytest.mark.parametrize("owned", OWNED)
def test_a_service_over_quota_is_reported_the_rest_applied_and_it_is_made_once_the_quota_goes(
    kubectl: Kubectl, ml_namespace: str, owned: Owned
) -> None:
    _no_services(kubectl, ml_namespace)
    owned.make(kubectl, ml_namespace)

    denied = wait_for(
        partial(_spec_applied, kubectl, owned.resource, ml_namespace, "ChildDenied"), 60, "SpecApplied ChildDenied"
    )
    assert denied["status"] == "False"
    assert denied["message"].startswith(f"Service {owned.service}: "), denied["message"]
    assert "exceeded quota: no-services" in denied["message"]
    kubectl.await_event_reasons(ml_namespace, owned.kind, {"SpecNotApplied"})
    # The children after the Service were applied all the same.
    wait_for(lambda: kubectl.find(*owned.after, ml_namespace) is not None, 60, f"{owned.after} to be applied")
    assert kubectl.find("service", owned.service, ml_namespace) is None

    # The quota goes: the next resync applies the Service, and the condition clears.
    kubectl.run("delete", "resourcequota", "no-services", "-n", ml_namespace)
    wait_for(partial(_cleared, kubectl, owned.resource, ml_namespace), 60, "SpecApplied=True")
    assert kubectl.find("service", owned.service, ml_namespace) is not None
    # Tried again without a storm: the periodic resync did it (no backoff retries), and while it was
    # denied the same refusal was told once.
    assert len(_warnings(kubectl, ml_namespace, owned.kind)) == 1


def _running(kubectl: Kubectl, namespace: str, reason: str) -> dict[str, Any] | None:
    running = condition(status(kubectl, "trainingjob", "churn", namespace), "Running")
    return running if running.get("reason") == reason else None


def test_workers_over_the_namespace_s_cpu_quota_are_reported_and_start_once_the_quota_allows(
    kubectl: Kubectl, ml_namespace: str
) -> None:
    # A quota on CPU refuses the pods, not the Job: the Job controller's FailedCreate Events are all
    # that says why, and the TrainingJob says it with them.
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute"}}
    kubectl.apply({**quota, "spec": {"hard": {"requests.cpu": "1"}}}, "-n", ml_namespace)
    wait_for(
        lambda: (
            "requests.cpu"
            in ((kubectl.find("resourcequota", "compute", ml_namespace) or {}).get("status") or {}).get("used", {})
        ),
        60,
        "the quota to be counted",
    )
    training_job(kubectl, ml_namespace, runPolicy={"suspend": False})

    refused = wait_for(partial(_running, kubectl, ml_namespace, "FailedCreate"), 90, "Running=False FailedCreate")
    assert refused["status"] == "False"
    # The example is elastic: it trains with one worker of two.
    said = "0/2 workers running (training needs 1). The Job cannot create worker pods: Error creating: pods "
    assert refused["message"].startswith(said), refused
    assert "exceeded quota: compute, requested: requests.cpu=4" in refused["message"]
    assert status(kubectl, "trainingjob", "churn", ml_namespace)["phase"] == "Pending"
    kubectl.await_event_reasons(ml_namespace, "TrainingJob", {"FailedCreate"})

    # The quota goes: the Job controller tries again, and the workers run to their end.
    kubectl.run("delete", "resourcequota", "compute", "-n", ml_namespace)
    wait_for(
        lambda: status(kubectl, "trainingjob", "churn", ml_namespace).get("phase") == "Succeeded", 180, "Succeeded"
    )
    selector = "reason=FailedCreate,involvedObject.kind=TrainingJob"
    told = kubectl.run("get", "events", "-n", ml_namespace, "--field-selector", selector, "-o", "name").stdout.split()
    assert len(told) == 1


def test_a_child_a_policy_forbids_is_reported_the_rest_applied_and_made_once_the_policy_goes(
    kubectl: Kubectl, ml_namespace: str, refuse: Refuse
) -> None:
    policy = refuse(_PROBE_CONFIG_MAP, "configmaps", "no ConfigMaps in this namespace", reason="Forbidden")
    training_job(kubectl, ml_namespace)

    denied = wait_for(
        partial(_spec_applied, kubectl, "trainingjob", ml_namespace, "ChildDenied"), 60, "SpecApplied ChildDenied"
    )
    assert denied["message"].startswith("ConfigMap churn-trainer: "), denied["message"]
    assert f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request" in denied["message"]
    assert "no ConfigMaps in this namespace" in denied["message"]
    kubectl.await_event_reasons(ml_namespace, "TrainingJob", {"SpecNotApplied"})
    # The Job, applied after the ConfigMap, was applied all the same.
    assert kubectl.find("job", "churn", ml_namespace) is not None

    _lift(kubectl, policy)
    wait_for(partial(_cleared, kubectl, "trainingjob", ml_namespace), 60, "SpecApplied=True")
    assert kubectl.find("configmap", "churn-trainer", ml_namespace) is not None
    assert len(_warnings(kubectl, ml_namespace, "TrainingJob")) == 1


# A metric the cluster's metrics adapter does not serve, which its policy keeps out of autoscalers.
QUEUE = {
    "type": "Pods",
    "pods": {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "10"}},
}
QUEUE_REFUSED = "the metric queue is not served in this cluster"
_PROBE_AUTOSCALER = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "probe"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "probe"},
        "maxReplicas": 2,
        "metrics": [QUEUE],
    },
}


def test_an_autoscaler_the_api_server_refuses_leaves_the_model_deployment_serving_but_not_ready(
    kubectl: Kubectl, ml_namespace: str, refuse: Refuse
) -> None:
    no_queue = (
        "!has(object.spec.metrics) || !object.spec.metrics.exists(m, m.type == 'Pods' && m.pods.metric.name == 'queue')"
    )
    refuse(_PROBE_AUTOSCALER, "horizontalpodautoscalers", QUEUE_REFUSED, expression=no_queue)
    training_job(kubectl, ml_namespace)
    export(kubectl, ml_namespace, 1)
    autoscaling = {"minReplicas": 2, "maxReplicas": 3, "metrics": [QUEUE]}
    kubectl.apply(model_deployment(autoscaling=autoscaling), "-n", ml_namespace)

    def degraded() -> dict[str, Any] | None:
        current = status(kubectl, "modeldeployment", "churn", ml_namespace)
        return current if current.get("phase") == "Degraded" and current.get("readyReplicas") else None

    # The Deployment serves, at the one replica it defaults to without the autoscaler that would own it.
    served = wait_for(degraded, 90, "the ModelDeployment to serve without its autoscaler")
    assert served["readyReplicas"] == 1
    applied = condition(served, "SpecApplied")
    assert (applied["status"], applied["reason"]) == ("False", "ChildRejected")
    assert applied["message"].startswith("HorizontalPodAutoscaler churn:"), applied["message"]
    for type_ in ("Ready", "Degraded"):
        said = condition(served, type_)
        assert said["reason"] == "SpecNotApplied", said
        assert QUEUE_REFUSED in said["message"], said
    assert condition(served, "Ready")["status"] == "False"
    assert kubectl.find("hpa", "churn", ml_namespace) is None
    assert kubectl.find("pdb", "churn", ml_namespace) is not None
    # Told once, by the Warning of the SpecApplied condition, not again for the phase.
    kubectl.await_event_reasons(ml_namespace, "ModelDeployment", {"SpecNotApplied"})
    warnings = kubectl.run(
        "get",
        "events",
        "-n",
        ml_namespace,
        "--field-selector",
        "type=Warning,involvedObject.kind=ModelDeployment",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert warnings == ["SpecNotApplied"], warnings

    # A metric the cluster serves: the autoscaler is made, and takes the replicas to its minimum.
    cpu_only = json.dumps({"spec": {"autoscaling": {"metrics": []}}})
    kubectl.run("patch", "md", "churn", "-n", ml_namespace, "--type=merge", "-p", cpu_only)

    def ready() -> dict[str, Any] | None:
        current = status(kubectl, "modeldeployment", "churn", ml_namespace)
        return current if current.get("phase") == "Ready" and current.get("readyReplicas") == 2 else None

    fixed = wait_for(ready, 90, "the ModelDeployment to be Ready with its autoscaler")
    assert condition(fixed, "Ready")["status"] == "True"
    assert condition(fixed, "SpecApplied")["status"] == "True"
    assert kubectl.find("hpa", "churn", ml_namespace) is not None
