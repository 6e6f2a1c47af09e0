"""Faults for the e2e tier: an operator to SIGKILL and start again,
and the checks that every object converged with one of each child and no orphan.

Everything here acts on a real control plane; the checks read the namespace as the admin with one
kubectl call, so that one snapshot answers all of them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from scaleml_operator.builders.meta import MANAGED_BY
from tests.support.kubectl import Kubectl
from tests.support.manifests import Manifest, example, merged
from tests.support.operator_process import OperatorProcess

OPERATOR_ACCOUNT: Final = ("scaleml-system", "scaleml-operator")
PARENT_KINDS: Final = ("TrainingJob", "ModelDeployment", "DriftMonitor")
# The child whose presence shows that a parent's reconcile got through, by the parent's kind
# (a DriftMonitor whose target captures and whose reference is a path gets its Deployment at once).
WITNESS: Final = {"TrainingJob": "Job", "ModelDeployment": "Deployment", "DriftMonitor": "Deployment"}
# Every kind the operator creates in a namespace, and those that the children make in turn
# (ReplicaSets and pods carry the children's labels): what the orphan check looks at.
SNAPSHOT_KINDS: Final = ",".join(
    (
        "trainingjobs.scaleml.dev",
        "modeldeployments.scaleml.dev",
        "driftmonitors.scaleml.dev",
        "jobs",
        "deployments",
        "replicasets",
        "pods",
        "services",
        "serviceaccounts",
        "configmaps",
        "roles",
        "rolebindings",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
    )
)


class RestartableOperator:
    """`scaleml operator --standalone` as its ServiceAccount, to kill and start again; one log per run."""

    def __init__(self, kubeconfig: Path, logs: Path) -> None:
        self.kubeconfig = kubeconfig
        self.logs = logs
        self.runs: list[OperatorProcess] = []

    @property
    def current(self) -> OperatorProcess:
        return self.runs[-1]

    def start(self) -> None:
        self.runs.append(OperatorProcess(self.kubeconfig, self.logs / f"operator-{len(self.runs)}.log", "--standalone"))
        try:
            self.current.wait_alive()
        except BaseException:
            self.current.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group: no handler finishes, nothing is flushed or released."""
        os.killpg(self.current.process.pid, signal.SIGKILL)
        self.current.stop()

    def stop(self) -> None:
        """End every run still going (one the kill schedule started late, too)."""
        for run in self.runs:
            run.stop()

    def exit_code(self) -> int | None:
        return self.current.process.poll()

    def output(self) -> str:
        return "".join(f"===== {run.log.name}\n{run.output()}" for run in self.runs)

    def state(self) -> str:
        """The process as a liveness probe would find it."""
        code = self.exit_code()
        if code is not None:
            return f"the operator exited with {code}"
        status, _ = self.current.get(self.current.liveness_port, "/healthz")
        return f"the operator runs, /healthz answers {status}"

    @contextmanager
    def explained(self, note: str = "", lines: int = 60) -> Iterator[None]:
        """An assertion that fails inside carries `note`, the process's state and the end of its logs."""
        try:
            yield
        except AssertionError as error:
            tail = "\n".join(self.output().splitlines()[-lines:])
            raise AssertionError(f"{error}\n{note}\n{self.state()}; its log ends:\n{tail}") from None


class KillSchedule:
    """SIGKILL and restart the operator at seeded random moments, from a thread of its own.

    The offsets (seconds from `start()`) are drawn once from the seed. A kill falls due no earlier
    than the restart before it has come up, so that each one hits a live operator.
    """

    def __init__(self, operator: RestartableOperator, seed: int, kills: int, within: float) -> None:
        self.operator = operator
        draw = random.Random(seed)
        self.offsets = sorted(round(draw.uniform(0, within), 2) for _ in range(kills))
        #: When each kill happened, in seconds from `start()`.
        self.done: list[float] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kill-schedule")
        self._future: Future[None] | None = None

    def start(self) -> None:
        self._future = self._pool.submit(self._run, time.monotonic())

    def _run(self, began: float) -> None:
        for offset in self.offsets:
            time.sleep(max(0.0, began + offset - time.monotonic()))
            self.done.append(round(time.monotonic() - began, 2))
            self.operator.kill()
            self.operator.start()

    def join(self, timeout: float) -> None:
        """Wait for the last restart; what failed in the thread is raised here."""
        assert self._future is not None, "start() first"
        try:
            self._future.result(timeout)
        finally:
            self._pool.shutdown(wait=False)


# ---------------------------------------------------------------- the objects


def training_job(name: str) -> Manifest:
    """The example TrainingJob on one worker, suspended: its Job exists at once and runs no pod."""
    return merged(
        example("TrainingJob"),
        {
            "metadata": {"name": name},
            "spec": {
                "scheduling": {"nodeSelector": None},
                "runPolicy": {"suspend": True},
                "resources": {"workers": 1},
                "elastic": None,
            },
        },
    )


def model_deployment(name: str, *, capture: bool = False) -> Manifest:
    """A ModelDeployment of a repository (so its Deployment is applied at once) at zero replicas."""
    spec: dict[str, Any] = {
        "model": {"repository": {"volumeClaim": "models", "modelName": "churn"}},
        "replicas": 0,
    }
    if capture:
        spec["capture"] = {"enabled": True, "volumeClaim": "captures"}
    return {"apiVersion": "scaleml.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": spec}


def drift_monitor(name: str, target: str) -> Manifest:
    """A DriftMonitor of a capturing ModelDeployment against a profile on a volume: its Deployment comes at once."""
    return {
        "apiVersion": "scaleml.dev/v1alpha1",
        "kind": "DriftMonitor",
        "metadata": {"name": name},
        "spec": {
            "target": {"modelDeployment": target},
            "reference": {"volumeClaim": "datasets", "path": "churn/profile.json"},
        },
    }


def mixed(prefix: str, training_jobs: int, model_deployments: int, drift_monitors: int) -> list[Manifest]:
    """TrainingJobs, ModelDeployments and DriftMonitors interleaved, each monitor after the deployment it watches."""
    jobs = [training_job(f"{prefix}-tj-{i}") for i in range(training_jobs)]
    deployments = [model_deployment(f"{prefix}-md-{i}", capture=i < drift_monitors) for i in range(model_deployments)]
    monitors = [drift_monitor(f"{prefix}-dm-{i}", f"{prefix}-md-{i}") for i in range(drift_monitors)]
    objects: list[Manifest] = []
    while jobs or deployments or monitors:
        for queue, take in ((jobs, 2), (deployments, 1), (monitors, 1)):
            objects += queue[:take]
            del queue[:take]
    return objects


def create(kubectl: Kubectl, namespace: str, objects: Sequence[Manifest]) -> None:
    """Create the objects with one kubectl call (create, not apply: a second object of a name is an error)."""
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kubectl.run("create", "-n", namespace, "-f", "-", stdin=json.dumps(body))


def create_paced(kubectl: Kubectl, namespace: str, objects: Sequence[Manifest], batch: int, pause: float) -> None:
    """Create the objects a batch at a time with a pause in between, so that they keep arriving for a while."""
    for start in range(0, len(objects), batch):
        create(kubectl, namespace, objects[start : start + batch])
        time.sleep(pause)


# ---------------------------------------------------------------- the checks


def _controller(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    references = item["metadata"].get("ownerReferences") or ()
    return next((reference for reference in references if reference.get("controller")), None)


def _describe(item: Mapping[str, Any]) -> str:
    return f"{item['kind']} {item['metadata']['name']}"


@dataclass(frozen=True)
class Snapshot:
    """Everything of the namespace the checks look at, read at one moment."""

    items: Sequence[Mapping[str, Any]]

    @classmethod
    def read(cls, kubectl: Kubectl, namespace: str) -> Snapshot:
        out = kubectl.run("get", SNAPSHOT_KINDS, "-n", namespace, "-o", "json").stdout
        return cls(json.loads(out)["items"])

    @property
    def parents(self) -> list[Mapping[str, Any]]:
        return [item for item in self.items if item["kind"] in PARENT_KINDS]

    def children(self, parent: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        """The objects whose controller is `parent` (by uid: a namesake that came before does not count)."""
        uid = parent["metadata"]["uid"]
        return [item for item in self.items if (_controller(item) or {}).get("uid") == uid]

    def unconverged(self, names: Sequence[str] = ()) -> list[str]:
        """The parents (all, or those named) whose status lags their spec or whose witness child is missing."""
        wanted = set(names)
        found = {item["metadata"]["name"] for item in self.parents}
        lagging = [f"{name}: missing" for name in sorted(wanted - found)]
        for parent in self.parents:
            meta, status = parent["metadata"], parent.get("status") or {}
            if wanted and meta["name"] not in wanted:
                continue
            if status.get("observedGeneration") != meta["generation"]:
                lagging.append(f"{_describe(parent)}: observedGeneration {status.get('observedGeneration')}")
            elif not any(child["kind"] == WITNESS[parent["kind"]] for child in self.children(parent)):
                lagging.append(f"{_describe(parent)}: no {WITNESS[parent['kind']]}")
        return lagging

    def duplicates(self) -> list[str]:
        """Two children of one kind under one parent (each kind's children are one of a kind)."""
        found = []
        for parent in self.parents:
            kinds = Counter(child["kind"] for child in self.children(parent))
            found += [f"{_describe(parent)}: {count} {kind}s" for kind, count in kinds.items() if count > 1]
        return found

    def orphans(self) -> list[str]:
        """Objects labelled as the operator's whose controller (an ownerReference) is missing or gone."""
        uids = {item["metadata"]["uid"] for item in self.items}
        found = []
        for item in self.items:
            if (item["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != MANAGED_BY:
                continue
            controller = _controller(item)
            if controller is None:
                found.append(f"{_describe(item)}: no controller")
            elif controller["uid"] not in uids:
                found.append(f"{_describe(item)}: its {controller['kind']} {controller['name']} is gone")
        return found


def converged(kubectl: Kubectl, namespace: str, names: Sequence[str], timeout: float) -> Snapshot:
    """The namespace once every parent named has converged; on timeout, an error that names the laggards."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = Snapshot.read(kubectl, namespace)
        lagging = snapshot.unconverged(names)
        if not lagging:
            return snapshot
        if time.monotonic() > deadline:
            shown = ", ".join(lagging[:10]) + (f" and {len(lagging) - 10} more" if len(lagging) > 10 else "")
            raise AssertionError(f"{len(lagging)} of {len(names)} not converged after {timeout:g} s: {shown}")
        time.sleep(1)


# ---------------------------------------------------------------- RBAC


@contextmanager
def revoked(kubectl: Kubectl, binding: str) -> Iterator[None]:
    """The ClusterRoleBinding `binding` deleted for the block, and put back as it was after it, however it ended."""
    saved = json.loads(kubectl.run("get", "clusterrolebinding", binding, "-o", "json").stdout)
    kubectl.run("delete", "clusterrolebinding", binding)
    try:
        yield
    finally:
        kept = ("name", "labels", "annotations")
        metadata = {key: value for key, value in saved["metadata"].items() if key in kept}
        kubectl.run("create", "-f", "-", stdin=json.dumps({**saved, "metadata": metadata}))
