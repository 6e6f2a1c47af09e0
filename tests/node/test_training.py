"""TrainingJob faults in real pods: a user error fails the job at once."""

from __future__ import annotations

import json
from functools import partial

import pytest

from tests.node.conftest import churn_claims, churn_training_job, finished
from tests.support.kubectl import Kubectl
from tests.support.node.node import RealNode
from tests.support.polling import wait_for

pytestmark = pytest.mark.node


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
