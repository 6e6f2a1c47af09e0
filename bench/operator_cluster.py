"""The bench's cluster: the test suite's control plane with the operator's requests audited, and ScaleML installed.

Set up as the end-to-end tests do (tests/e2e/conftest.py): kube-apiserver, kube-controller-manager,
kube-scheduler and KWOK with fake nodes, `manifests/` applied server-side, and the operator run as
a local process (`scaleml operator --standalone`) with a token of its own ServiceAccount, so that
RBAC, Pod Security admission and API Priority and Fairness treat it as in a cluster. KWOK plays the
kubelet: pods are scheduled, turn Running, and Job pods complete, without any container running.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from operator_api import Api, collection
from operator_audit import AuditLog, apiserver_flags

from scaleml_operator.builders.trainingjob import job_finished
from tests.support.controlplane import NODES_TIER, ControlPlane, find_binaries
from tests.support.kubectl import Kubectl
from tests.support.manifests import ROOT
from tests.support.operator_process import SCALEML, OperatorProcess
from tests.support.volumes import bound_claim, volume_name

OPERATOR_NAMESPACE: Final = "scaleml-system"
OPERATOR_ACCOUNT: Final = "scaleml-operator"
OPERATOR_USER: Final = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
NODES: Final = 10
APISERVER: Final = "kube-apiserver"
# The volumes the specs name, as tests/e2e/conftest.py's claims_namespace makes them.
CLAIMS: Final = ("datasets", "checkpoints", "models", "captures")
RESTRICTED: Final = {"pod-security.kubernetes.io/enforce": "restricted"}
NAMESPACE_TIMEOUT: Final = 900.0
# Each ModelDeployment has a ClusterIP Service, and the suite's /24 runs out at 253 of them. (The last
# occurrence of a flag wins; the first address, the `kubernetes` Service's in the serving certificate, stays.)
SERVICE_IP_RANGE: Final = "--service-cluster-ip-range=10.0.0.0/20"
# The bench runs for far longer than the suite's default token hour.
TOKEN_SECONDS: Final = 24 * 3600


@dataclass(frozen=True)
class Usage:
    """What the operator process used so far: CPU seconds (user + system, its children's too), RSS and peak RSS."""

    cpu_seconds: float
    rss_kib: int
    peak_kib: int


def usage(pid: int) -> Usage:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # After the command name (which may hold spaces): state is field 3; utime, stime, cutime, cstime 14-17.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = sum(int(value) for value in fields[11:15])
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0])
    return Usage(ticks / os.sysconf("SC_CLK_TCK"), memory["VmRSS"], memory["VmHWM"])


def operator_code() -> str:
    """Where the operator process imports scaleml_operator from: its interpreter, with this environment.

    PYTHONPATH may point at another copy of the operator (the one of a commit, to compare), and
    the `scaleml` script passes it on like any Python program.
    """
    interpreter = SCALEML.read_text().splitlines()[0].removeprefix("#!").strip()
    result = subprocess.run(
        [interpreter, "-c", "import scaleml_operator; print(scaleml_operator.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


class Cluster:
    """The control plane, ScaleML's CRDs and RBAC, the bench's client, and the audit log of the operator's requests."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        flags, log = apiserver_flags(directory, OPERATOR_USER)
        binaries = find_binaries()
        binaries.require(NODES_TIER)
        self.plane = ControlPlane(
            binaries, workdir=directory / "control-plane", apiserver_flags=[*flags, SERVICE_IP_RANGE]
        )
        self.audit = AuditLog(log, OPERATOR_USER)
        self._api: Api | None = None
        self._operator_api: Api | None = None

    @property
    def api(self) -> Api:
        """The admin's client."""
        if self._api is None:
            raise RuntimeError("the cluster is not started")
        return self._api

    @property
    def operator_api(self) -> Api:
        """A client with the operator's identity: its ServiceAccount's RBAC and admission policy apply."""
        if self._operator_api is None:
            raise RuntimeError("the cluster is not started")
        return self._operator_api

    def start(self) -> None:
        self.plane.start_nodes(count=NODES)
        pki = self.plane.pki
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        self._api = Api(self.plane.server, context)
        kubectl = Kubectl(self.plane.kubeconfig)
        kubectl.run("apply", "--server-side", "-k", str(ROOT / "manifests"))
        kubectl.run(
            "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=scaleml"
        )
        # The CRDs' storage answers 429 for a moment after Established; kubectl waits that out.
        kubectl.run("get", "trainingjobs,modeldeployments,driftmonitors", "--all-namespaces")
        # Its pod would only be simulated: the operator runs as a local process instead.
        kubectl.run("scale", "deployment", "scaleml-operator", "-n", OPERATOR_NAMESPACE, "--replicas=0")
        token = self.plane.request_token(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, expiration_seconds=TOKEN_SECONDS)
        self._operator_api = Api(self.plane.server, ssl.create_default_context(cafile=str(pki.ca_cert)), token)

    def stop(self) -> None:
        self.plane.stop()

    def cpu_seconds(self) -> dict[str, float]:
        """Each control-plane process's CPU seconds (user + system) so far, by component ("kube-apiserver", ...)."""
        return {name: usage(pid).cpu_seconds for name, pid in self.plane.pids().items()}

    def apiserver_cpu_seconds(self) -> float:
        """kube-apiserver's CPU seconds so far: what every client's requests cost it."""
        return self.cpu_seconds()[APISERVER]

    @contextlib.contextmanager
    def operator(self, log: Path) -> Iterator[OperatorProcess]:
        """`scaleml operator --standalone` as its ServiceAccount, as the e2e tests run it; stopped afterwards."""
        token = self.plane.request_token(OPERATOR_NAMESPACE, OPERATOR_ACCOUNT, expiration_seconds=TOKEN_SECONDS)
        process = OperatorProcess(self.plane.kubeconfig_for_token(token, name="bench-operator"), log, "--standalone")
        try:
            process.wait_alive()
            yield process
        finally:
            process.stop()

    def make_namespace(self, name: str) -> None:
        """A restricted namespace with the claims bound to volumes, and its default ServiceAccount there."""
        api = self.api
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": RESTRICTED}})
        for claim in CLAIMS:
            for manifest in bound_claim(name, claim, {"hostPath": {"path": f"/srv/{volume_name(name, claim)}"}}):
                api.create(manifest)
        # ServiceAccount admission turns pods away until the account exists; unbound claims keep pods
        # unscheduled. Either would be counted against whichever run comes first.
        _wait(lambda: api.exists(f"{collection('v1', 'serviceaccounts', name)}/default"), f"{name}'s ServiceAccount")
        _wait(lambda: self._claims_bound(name), f"{name}'s claims to bind")

    def _claims_bound(self, namespace: str) -> bool:
        claims = self.api.items("v1", "persistentvolumeclaims", namespace)
        return len(claims) == len(CLAIMS) and all(c.get("status", {}).get("phase") == "Bound" for c in claims)

    def delete_namespace(self, name: str) -> None:
        """Deletes the namespace and everything in it, once its Jobs have finished, and waits until it is gone.

        A namespace is emptied of its pods before anything else (ordered namespace deletion). A pod the
        Job controller creates as the deletion starts cannot be bound any more, and it keeps the Job
        controller's tracking finalizer: the namespace then waited for it, with every other object
        in place, for as long as anyone looked. The plain runs end as soon as their Jobs exist, with
        the Job controller still making pods, so the Jobs are let finish first.
        """
        api = self.api
        _wait(lambda: all(job_finished(job) for job in api.items("batch/v1", "jobs", name)), f"the Jobs of {name}")
        api.delete(f"{collection('v1', 'namespaces')}/{name}")
        _wait(lambda: not api.exists(f"{collection('v1', 'namespaces')}/{name}"), f"namespace {name} to go")
        for claim in CLAIMS:
            api.delete(f"{collection('v1', 'persistentvolumes')}/{volume_name(name, claim)}")


def _wait(condition: Callable[[], bool], what: str, timeout: float = NAMESPACE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.5)
