"""The sweep for children deleted by hand: which are found gone, and that every kind the operator makes is
either watched or swept. (tests/apiserver/test_vanished.py reads the lists from a real API server.)"""

from __future__ import annotations

from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.v1alpha1.trainingjob import TrainingJobSpec
from scaleml_operator.builders import driftmonitor, modeldeployment, trainingjob
from scaleml_operator.builders.meta import Owner
from scaleml_operator.handlers.settings import WATCH_SELECTORS
from scaleml_operator.reconcile.known import Child
from scaleml_operator.reconcile.vanished import SWEPT, missing
from tests.support.manifests import example

TRAINING = Owner("TrainingJob", "churn", "ml", "uid-1")
SERVING = Owner("ModelDeployment", "churn", "ml", "uid-2")


def test_a_known_child_whose_uid_is_not_listed_is_gone_and_its_owner_named() -> None:
    account = Child(TRAINING, "ServiceAccount", "churn-trainer", "sa-1")
    config = Child(TRAINING, "ConfigMap", "churn-config", "cm-1")
    service = Child(SERVING, "Service", "churn", "svc-1")
    present: dict[str, set[str]] = {kind: set() for kind in SWEPT} | {"ServiceAccount": {"sa-1"}, "Service": {"svc-1"}}
    assert missing([account, config, service], present) == {TRAINING: [config]}


def test_a_child_replaced_by_another_of_its_name_is_gone_too() -> None:
    # Deleted and made again by someone else: the name is listed, under another uid.
    account = Child(TRAINING, "ServiceAccount", "churn-trainer", "sa-1")
    assert missing([account], {"ServiceAccount": {"sa-2"}}) == {TRAINING: [account]}


def test_kinds_that_were_not_listed_are_not_judged() -> None:
    job = Child(TRAINING, "Job", "churn", "job-1")
    assert missing([job], {kind: set() for kind in SWEPT}) == {}


def test_every_kind_the_operator_makes_is_watched_or_swept_under_the_api_version_it_is_made_with() -> None:
    training = trainingjob.children(
        TRAINING, TrainingJobSpec.model_validate(example("TrainingJob")["spec"]), "registry.example/workloads:1"
    )
    serving = modeldeployment.children(
        SERVING,
        ModelDeploymentSpec.model_validate(example("ModelDeployment")["spec"]),
        modeldeployment.ModelSource("models", "churn", 3),
        ("registry.example/tritonserver:1", "registry.example/workloads:1"),
    )
    monitoring = driftmonitor.children(
        Owner("DriftMonitor", "churn", "ml", "uid-3"),
        DriftMonitorSpec.model_validate(example("DriftMonitor")["spec"]),
        None,
        "registry.example/workloads:1",
    )
    made = {
        manifest["kind"]: manifest["apiVersion"]
        for children in (training, serving, monitoring)
        for manifest in (*children.apply, *children.create)
    }
    made |= {kind: api_version for api_version, kind, _ in serving.absent}
    watched = {"Job", "Deployment"}
    assert {plural for _, _, plural in WATCH_SELECTORS} == {"jobs", "deployments", "pods"}
    # A TrainingJob, made by a DriftMonitor's retraining, is the operator's own kind: watched too.
    assert set(made) - {"TrainingJob"} == watched | set(SWEPT)
    assert {kind: made[kind] for kind in SWEPT} == SWEPT
