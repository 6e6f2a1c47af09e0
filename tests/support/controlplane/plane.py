"""The control plane itself: one process set of etcd and kube-apiserver, then the nodes tier on demand.

``ControlPlane.start_api()`` starts the API tier, ``ControlPlane.start_nodes()`` adds the nodes tier
(see the package docstring). Each component's command line is in `components` (KWOK's in `kwok`),
how it is started, waited for and ended in `processes`, its certificates and kubeconfigs in `pki`.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import yaml

from tests.support.controlplane import components, kwok
from tests.support.controlplane.binaries import API_TIER, NODES_TIER, Binaries, find_binaries
from tests.support.controlplane.pki import Pki, b64, generate_pki, write_kubeconfig
from tests.support.controlplane.processes import (
    Component,
    ControlPlaneError,
    http_ok,
    insecure_context,
    opener,
    proc_status_kib,
    spawn,
    terminate,
    wait_until,
)
from tests.support.ports import free_port

T = TypeVar("T")


def _listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _started(value: T | None) -> T:
    """What `start_api()` set, or the error that says it was not called."""
    if value is None:
        raise ControlPlaneError("the control plane is not started (call start_api())")
    return value


class ControlPlane:
    """etcd + kube-apiserver, optionally + kube-controller-manager, kube-scheduler, KWOK and fake nodes.

    All processes bind 127.0.0.1 only, run in their own sessions and log to ``<workdir>/<name>.log``.
    ``stop()`` ends only these processes and removes the temporary directories.
    """

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        workdir: Path | None = None,
        timeout: float = 120.0,
        node_capacity: Mapping[str, str] | None = None,
        apiserver_flags: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries if binaries is not None else find_binaries()
        self.timeout = timeout
        self.node_capacity: dict[str, str] = dict(
            node_capacity
            if node_capacity is not None
            else {
                "cpu": "32",
                "memory": "128Gi",
                "pods": "110",
                "ephemeral-storage": "1Ti",
                "nvidia.com/gpu": "8",
            }
        )
        #: Added to kube-apiserver's command line after the suite's own (an audit policy, say).
        self.apiserver_flags = tuple(apiserver_flags)
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="scaleml-cp-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._etcd_dir: Path | None = None
        self._etcd_url = ""
        self._components: list[Component] = []
        self._used_ports: set[int] = set()
        self._pki: Pki | None = None
        self._ssl: ssl.SSLContext | None = None
        self._server: str | None = None
        self._kubeconfig: Path | None = None
        self._nodes: list[str] = []
        self._nodes_started = False
        self._atexit_registered = False
        #: Seconds taken by ``start_api()`` / ``start_nodes()`` (first call), for reporting.
        self.api_startup_seconds: float | None = None
        self.nodes_startup_seconds: float | None = None

    # ---------------------------------------------------------------- public properties

    @property
    def server(self) -> str:
        """``https://127.0.0.1:<port>`` of the kube-apiserver."""
        return _started(self._server)

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig file for the ``system:masters`` admin user (client certificate)."""
        return _started(self._kubeconfig)

    @property
    def pki(self) -> Pki:
        return _started(self._pki)

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed the apiserver's serving certificate."""
        return self.pki.ca_cert

    @property
    def nodes(self) -> tuple[str, ...]:
        """Names of the fake nodes created by ``start_nodes()``."""
        return tuple(self._nodes)

    @property
    def api_running(self) -> bool:
        return self._server is not None

    @property
    def nodes_running(self) -> bool:
        return self._nodes_started

    # ---------------------------------------------------------------- context manager

    def __enter__(self) -> Self:
        self.start_api()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- tier 1

    def start_api(self) -> None:
        """Start etcd and kube-apiserver and wait for ``/readyz``. Idempotent."""
        if self._server is not None:
            return
        self.binaries.require(API_TIER)
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)  # stop() removes it; a restart recreates it
        self._register_atexit()
        try:
            self._start_etcd()
            self._start_apiserver()
        except BaseException:
            self._terminate_all()
            raise
        self.api_startup_seconds = time.monotonic() - began

    def _start_etcd(self) -> Component:
        shm = Path("/dev/shm")
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
        self._etcd_dir = Path(tempfile.mkdtemp(prefix="scaleml-etcd-", dir=parent))
        client, peer = self._free_port(), self._free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._etcd_url = client_url
        etcd = self._spawn(
            "etcd", self.binaries.path("etcd"), components.etcd_args(self._etcd_dir / "data", client_url, peer_url)
        )
        self._wait(etcd, "did not become healthy", lambda: http_ok(f"{client_url}/health", None))
        return etcd

    def _start_apiserver(self) -> Component:
        self._pki = pki = generate_pki(self.workdir / "pki")
        port = self._free_port()
        self._server = None
        server = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        self._ssl = context
        apiserver = self._spawn(
            "kube-apiserver",
            self.binaries.path("kube-apiserver"),
            [*components.apiserver_args(self._etcd_url, port, self.workdir, pki), *self.apiserver_flags],
        )
        self._wait(apiserver, "did not become ready", lambda: http_ok(f"{server}/readyz", context))
        self._server = server
        self._kubeconfig = self._write_kubeconfig(
            self.workdir / "admin.kubeconfig",
            "scaleml-admin",
            {
                "client-certificate-data": b64(pki.admin_cert.read_bytes()),
                "client-key-data": b64(pki.admin_key.read_bytes()),
            },
        )
        return apiserver

    def restart_api(self) -> None:
        """Stop kube-apiserver and start it again: same port, etcd, certificates and service-account key.

        For fault tests: every client keeps its kubeconfig and token and has to reconnect by itself.
        Returns once ``/readyz`` answers again and, with the nodes tier, KWOK has renewed every fake
        node's lease through it (a Node's Ready condition, kept in etcd, would not show that KWOK reconnected).
        """
        old = self._component("kube-apiserver")
        binary, *args = (str(part) for part in old.process.args)  # type: ignore[union-attr]
        old.process.terminate()
        # It stops listening once its in-flight requests have drained, and may then linger for seconds
        # before it exits, serving nothing: that is not waited for.
        port = urllib.parse.urlsplit(self.server).port or 443
        deadline = time.monotonic() + 10
        while old.process.poll() is None and _listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        old.process.kill()
        old.process.wait()
        old.log_file.close()
        stopped = datetime.now(UTC)
        self._components.remove(old)
        apiserver = self._spawn("kube-apiserver", Path(binary), args)
        self._wait(apiserver, "did not become ready again", lambda: http_ok(f"{self.server}/readyz", self._ssl))
        for name in self._nodes:
            self._wait(
                self._component("kwok"), f"did not renew node {name}'s lease", partial(self._renewed, name, stopped)
            )

    # ---------------------------------------------------------------- tier 2

    def start_nodes(self, count: int = 1, extra_stages: Sequence[str | Path] = ()) -> None:
        """Start kube-controller-manager, kube-scheduler and KWOK (once), and ensure ``count`` Ready nodes.

        ``extra_stages`` are KWOK Stage YAML texts or files, used in addition to the default stages and
        :data:`EXIT_CODE_STAGE`; they only take effect on the first call (when KWOK starts).
        Calling it again is cheap: it only adds nodes if ``count`` is larger than before.
        """
        self.start_api()
        began = time.monotonic()
        if not self._nodes_started:
            self.binaries.require(NODES_TIER)
            try:
                self._start_controller_manager()
                self._start_scheduler()
                self._start_kwok(extra_stages)
            except BaseException:
                self._terminate_all(keep=("etcd", "kube-apiserver"))
                raise
            self._nodes_started = True
        new = [f"kwok-node-{i}" for i in range(len(self._nodes), count)]
        for name in new:
            self._create_node(name)
            self._nodes.append(name)
        for name in new:
            self._wait(self._component("kwok"), f"did not make node {name} Ready", partial(self._node_ready, name))
        if self.nodes_startup_seconds is None:
            # The controller manager's ServiceAccount controller is what pods need first.
            self._wait(
                self._component("kube-controller-manager"),
                "did not create the default ServiceAccount",
                lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
            )
            self.nodes_startup_seconds = time.monotonic() - began

    def _start_controller_manager(self) -> Component:
        pki, port = self.pki, self._free_port()
        kcm = self._spawn(
            "kube-controller-manager",
            self.binaries.path("kube-controller-manager"),
            components.controller_manager_args(self.kubeconfig, port, self.workdir, pki),
        )
        self._wait(
            kcm,
            "did not become healthy",
            lambda: http_ok(f"https://127.0.0.1:{port}/healthz", insecure_context()),
        )
        return kcm

    def _start_scheduler(self) -> Component:
        port = self._free_port()
        config = self.workdir / "kube-scheduler.yaml"
        config.write_text(yaml.safe_dump(components.scheduler_config(self.kubeconfig)))
        scheduler = self._spawn(
            "kube-scheduler",
            self.binaries.path("kube-scheduler"),
            components.scheduler_args(config, self.kubeconfig, port, self.workdir),
        )
        self._wait(
            scheduler,
            "did not become healthy",
            lambda: http_ok(f"https://127.0.0.1:{port}/healthz", insecure_context()),
        )
        return scheduler

    def _start_kwok(self, extra_stages: Sequence[str | Path]) -> Component:
        configs = kwok.stage_files(self.workdir, self.binaries.path("kwok-stages.yaml"), extra_stages)
        kwok_home = self.workdir / "kwok"
        kwok_home.mkdir(exist_ok=True)
        return self._spawn(
            "kwok",
            self.binaries.path("kwok"),
            kwok.kwok_args(self.kubeconfig, configs),
            # kwok also loads $KWOK_WORKDIR/kwok.yaml (default ~/.kwok/kwok.yaml) if it exists: isolate it.
            env={"KWOK_WORKDIR": str(kwok_home)},
        )

    def _create_node(self, name: str) -> None:
        self._request("POST", "/api/v1/nodes", kwok.node_manifest(name, self.node_capacity))

    def _node_ready(self, name: str) -> bool:
        return kwok.node_ready(self._get(f"/api/v1/nodes/{name}"))

    def _renewed(self, name: str, since: datetime) -> bool:
        """Whether the node is Ready and its lease was renewed after `since`."""
        lease = self._get(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}") or {}
        renewed = lease.get("spec", {}).get("renewTime")
        return bool(renewed) and datetime.fromisoformat(renewed) > since and self._node_ready(name)

    # ---------------------------------------------------------------- tokens and kubeconfigs

    def request_token(self, namespace: str, service_account: str, expiration_seconds: int = 3600) -> str:
        """Mint a token for a ServiceAccount through the TokenRequest API (the account must exist)."""
        response = self._request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )
        return str(response["status"]["token"])

    def kubeconfig_for_token(self, token: str, name: str | None = None) -> Path:
        """Write a kubeconfig that authenticates with a bearer token; returns its path."""
        directory = self.workdir / "kubeconfigs"
        directory.mkdir(exist_ok=True)
        if name is None:
            handle, raw = tempfile.mkstemp(prefix="token-", suffix=".kubeconfig", dir=directory)
            os.close(handle)
            path = Path(raw)
        else:
            path = directory / f"{name}.kubeconfig"
        return self._write_kubeconfig(path, name or "token-user", {"token": token})

    def _write_kubeconfig(self, path: Path, user: str, credentials: Mapping[str, str]) -> Path:
        return write_kubeconfig(path, self._server, self.pki.ca_cert, user, credentials)

    # ---------------------------------------------------------------- measurements

    def memory_usage(self) -> dict[str, tuple[int | None, int | None]]:
        """Per running component: (current RSS, peak RSS) in KiB, from /proc/<pid>/status."""
        return {
            c.name: (proc_status_kib(c.process.pid, "VmRSS"), proc_status_kib(c.process.pid, "VmHWM"))
            for c in self._components
            if c.process.poll() is None
        }

    def pids(self) -> dict[str, int]:
        """The process id of each running component, by name ("kube-apiserver", "etcd", ...)."""
        return {c.name: c.process.pid for c in self._components if c.process.poll() is None}

    def log_path(self, component: str) -> Path:
        return self._component(component).log_path

    # ---------------------------------------------------------------- teardown

    def stop(self) -> None:
        """Terminate our processes (newest first; SIGTERM, ~10 s, SIGKILL) and remove the temp dirs."""
        self._terminate_all()
        if self._etcd_dir is not None:
            shutil.rmtree(self._etcd_dir, ignore_errors=True)
            self._etcd_dir = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._server = None
        self._kubeconfig = None
        self._nodes_started = False
        self._nodes.clear()
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def _terminate_all(self, keep: Sequence[str] = ()) -> None:
        """End our components but ``keep`` (see `processes.terminate` for the order)."""
        victims = [c for c in self._components if c.name not in keep]
        terminate(victims)
        self._components = [c for c in self._components if c not in victims]

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    # ---------------------------------------------------------------- internals

    def _free_port(self) -> int:
        """A free port that no component of this control plane was given yet."""
        while True:
            port = free_port()
            if port not in self._used_ports:
                self._used_ports.add(port)
                return port

    def _spawn(self, name: str, binary: Path, args: Sequence[str], env: Mapping[str, str] | None = None) -> Component:
        component = spawn(self.workdir, name, binary, args, env)
        self._components.append(component)
        return component

    def _component(self, name: str) -> Component:
        for component in self._components:
            if component.name == name:
                return component
        raise ControlPlaneError(f"{name} is not running")

    def _wait(self, component: Component, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """Poll ``ready`` until it is true; fail fast (with the log tail) if the component exits."""
        wait_until(component, what, ready, self.timeout if timeout is None else timeout)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON request to the apiserver as the admin user; raises ControlPlaneError on HTTP errors."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with opener(self._ssl).open(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise ControlPlaneError(f"{method} {path} failed: HTTP {exc.code}: {detail}") from exc

    def _get(self, path: str) -> dict[str, Any] | None:
        """GET an object; ``None`` if it does not exist (404)."""
        try:
            result = self._request("GET", path)
        except ControlPlaneError as exc:
            if isinstance(exc.__cause__, urllib.error.HTTPError) and exc.__cause__.code == 404:
                return None
            raise
        return result if isinstance(result, dict) else None
