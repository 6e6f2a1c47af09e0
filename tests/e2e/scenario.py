"""The examples' objects on the test cluster, and the parts of their pods the tests play (KWOK runs no code)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.kubectl import Kubectl
from tests.support.manifests import example, merged
from tests.support.polling import wait_for


def training_job(kubectl: Kubectl, namespace: str, name: str = "churn", **changes: Any) -> None:
    """The example TrainingJob, held suspended: the tests play its pods' part and report exported versions."""
    job = merged(
        example("TrainingJob"),
        {"metadata": {"name": name}, "spec": {"scheduling": {"nodeSelector": None}, "runPolicy": {"suspend": True}}},
    )
    kubectl.apply(merged(job, {"spec": changes}), "-n", namespace)
    wait_for(lambda: (kubectl.find("trainingjob", name, namespace) or {}).get("status", {}).get("phase"), 60)


def export(
    kubectl: Kubectl, namespace: str, version: int, job: str = "churn", evaluation: dict[str, Any] | None = None
) -> None:
    """What a trainer pod does at the end of a run: patch modelVersion (with its evaluation, if given), as the
    ServiceAccount the operator gave it."""
    reported: dict[str, Any] = {"modelVersion": version, **({"evaluation": evaluation} if evaluation else {})}
    patch_status(kubectl, "trainingjob", job, namespace, reported, f"{job}-trainer")


def patch_status(
    kubectl: Kubectl, resource: str, name: str, namespace: str, status: dict[str, Any], account: str
) -> None:
    kubectl.run(
        "patch",
        resource,
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
        f"--as=system:serviceaccount:{namespace}:{account}",
    )


def model_deployment(**changes: Any) -> dict[str, Any]:
    return merged(example("ModelDeployment"), {"spec": changes})


def status(kubectl: Kubectl, resource: str, name: str, namespace: str) -> dict[str, Any]:
    found: dict[str, Any] = (kubectl.find(resource, name, namespace) or {}).get("status", {})
    return found


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})
