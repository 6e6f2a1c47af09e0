"""A TrainingJob in real pods: two workers meet over their headless Service's DNS name, train with
gloo, checkpoint to a claim and export version 1, as the operator renders them and runc runs them.
"""

from __future__ import annotations

import json
from functools import partial

import pytest

from tests.node.conftest import churn_claims, churn_training_job, finished
from tests.support.kubectl import Kubectl
from tests.support.node.config import NODE_NAME
from tests.support.node.node import RealNode
from tests.support.polling import wait_for

pytestmark = pytest.mark.node


def test_two_workers_meet_over_dns_train_checkpoint_and_export(
    real_node: RealNode, kubectl: Kubectl, ml_namespace: str
) -> None:
    namespace = ml_namespace
    volumes = churn_claims(kubectl, real_node, namespace, 2000)

    kubectl.apply(churn_training_job(), "-n", namespace)
    done = wait_for(partial(finished, kubectl, namespace), 300, "the TrainingJob to finish")

    pods = json.loads(kubectl.run("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    logs = {
        pod["metadata"]["name"]: kubectl.run("logs", pod["metadata"]["name"], "-n", namespace, check=False).stdout
        for pod in pods
    }
    assert done["status"]["phase"] == "Succeeded", (done["status"], logs)
    assert done["status"]["modelVersion"] == 1
    # Two pods on the real node, each exiting 0 after its run.
    assert sorted(pod["spec"]["nodeName"] for pod in pods) == [NODE_NAME, NODE_NAME]
    assert all(pod["status"]["phase"] == "Succeeded" for pod in pods)
    # Each worker is one rank of two (they met at worker 0's DNS name), and they ended in agreement.
    assert sorted(" of 2 on cpu" in log for log in logs.values()) == [True, True], logs
    assert any("all 2 ranks finished with the same parameters" in log for log in logs.values()), logs
    # Rank 0 reported its progress to the API server from inside its pod, as its ServiceAccount.
    progress = done["status"]["progress"]
    assert progress["step"] == progress["totalSteps"] > 0
    assert progress["epoch"] == 2
    assert kubectl.await_event_reasons(namespace, "TrainingJob", {"TrainingStarted", "TrainingSucceeded"})

    exported = volumes["models"] / "churn" / "1"
    assert any(exported.iterdir()), f"nothing exported under {exported}"
    checkpoints = [path for path in volumes["checkpoints"].rglob("*") if path.is_file()]
    assert checkpoints, "no checkpoint written"
    # Written by the pods' user, through the group the kubelet gave the claim (fsGroup).
    assert {path.stat().st_uid for path in checkpoints} == {1000}


def test_a_missing_column_fails_the_job_at_once_and_names_the_column(
    real_node: RealNode, kubectl: Kubectl, ml_namespace: str
) -> None:
    namespace = ml_namespace
    churn_claims(kubectl, real_node, namespace, 200)

    job = churn_training_job(data={"target": "cancelled"}, runPolicy={"backoffLimit": 4})
    kubectl.apply(job, "-n", namespace)
    done = wait_for(partial(finished, kubectl, namespace), 180, "the TrainingJob to finish")

    assert done["status"]["phase"] == "Failed"
    failed = next(c for c in done["status"]["conditions"] if c["type"] == "Failed")
    assert "cancelled" in failed["message"], failed
    # The data check's exit code (2) failed the Job by its pod failure policy: no retry was made.
    assert failed["reason"] == "PodFailurePolicy", failed
    pods = json.loads(kubectl.run("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(pods) <= 2, [pod["metadata"]["name"] for pod in pods]
