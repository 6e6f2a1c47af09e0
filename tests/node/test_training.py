"""TrainingJob faults in real pods: a user error fails the job at once; a worker pod deleted mid-run
is replaced, and the run resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import pytest

from tests.node.conftest import churn_claims, churn_training_job, finished, pod_logs
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


def _checkpoint_steps(directory: Path) -> list[int]:
    return sorted(
        int(match[1]) for path in directory.rglob("step-*.pt") if (match := re.match(r"step-(\d+)", path.name))
    )


def test_a_deleted_worker_pod_is_replaced_and_the_run_resumes_from_its_checkpoint(
    real_node: RealNode, kubectl: Kubectl, ml_namespace: str
) -> None:
    namespace = ml_namespace
    volumes = churn_claims(kubectl, real_node, namespace, 4000)
    # Long enough (thousands of steps) to be mid-run when the pod goes.
    job = churn_training_job(hyperparameters={"epochs": 30, "batchSize": 32}, checkpoint={"everySteps": 100, "keep": 3})
    kubectl.apply(job, "-n", namespace)

    # Once a checkpoint is on the claim, worker 0's pod (which hosts the rendezvous) is deleted, as a
    # node drain or a preemption would.
    checkpoints = volumes["checkpoints"]
    wait_for(lambda: _checkpoint_steps(checkpoints), 240, "a first checkpoint", interval=0.2, max_interval=0.2)
    selector = "job-name=churn,batch.kubernetes.io/job-completion-index=0"
    kubectl.run("delete", "pod", "-n", namespace, "-l", selector, "--wait=false")
    # What a restart can resume from: the newest checkpoint on the claim once the pod was told to stop.
    newest_at_delete = _checkpoint_steps(checkpoints)[-1]

    done = wait_for(partial(finished, kubectl, namespace), 420, "the TrainingJob to finish")
    logs = pod_logs(kubectl, namespace)
    assert done["status"]["phase"] == "Succeeded", (done["status"], logs)
    total = done["status"]["progress"]["totalSteps"]
    assert newest_at_delete < total, "the pod was deleted after training had ended"
    # Both ranks of the new group resumed from the same checkpoint: the newest on the claim when the
    # pod was deleted, or one the old group wrote while it stopped. Nothing older: at most one
    # checkpoint interval of work was lost.
    resumed = [int(step) for log in logs.values() for step in re.findall(r"resumed from \S+step-(\d+)\.pt", log)]
    assert len(resumed) == 2, logs
    assert len(set(resumed)) == 1, resumed
    assert resumed[0] >= newest_at_delete, (newest_at_delete, resumed)
    assert done["status"]["modelVersion"] == 1
    # The worker that lost its peer failed and was retried: `kubectl get` counts it.
    assert done["status"]["restarts"] >= 1, done["status"]
