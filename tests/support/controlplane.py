"""A real Kubernetes control plane for the test suite, run as local subprocesses.

Two tiers share one process set:

* ``ControlPlane.start_api()`` starts **etcd** and **kube-apiserver** (client-certificate authentication,
  RBAC authorisation, the default admission plugins including ``PodSecurity`` and ``ServiceAccount``,
  a service-account signing key so that the TokenRequest API works, and a front-proxy client
  certificate so that aggregated APIs can be registered).
* ``ControlPlane.start_nodes()`` adds **kube-controller-manager** (every controller: garbage collection,
  namespace finalisation, Deployment/ReplicaSet/Job, ServiceAccount tokens...), **kube-scheduler** and
  **KWOK**, and registers fake Nodes (32 cpu, 128Gi memory, 110 pods, 8 ``nvidia.com/gpu``) that KWOK
  keeps Ready. Pods get scheduled onto them, turn Running/Ready, and Job pods complete.

Binaries are found by :func:`find_binaries`: each one is taken from ``$KUBEBUILDER_ASSETS`` when that
variable is set and the directory holds it (setup-envtest ships etcd, kube-apiserver and kubectl only),
otherwise from ``$SCALEML_CONTROL_PLANE_DIR/bin`` (default ``~/.cache/scaleml/control-plane/k8s-v1.36.3``,
built by ``make control-plane``). KWOK's default stages are read from
``$SCALEML_CONTROL_PLANE_DIR/kwok-stages.yaml``.

Simulated pod outcomes (nodes tier)
-----------------------------------
KWOK's default ``pod-complete`` stage turns every Running pod owned by a Job into ``Succeeded`` (exit
code 0). To make a pod fail instead, give it (e.g. in a Job's pod template) the annotation::

    scaleml.dev/kwok-exit-code: "3"

A Running pod whose annotation holds a value other than ``"0"`` is turned ``Failed`` with every container
terminated with that exit code (reason ``Error``); this works for any pod, owned by a Job or not. The value
must be a decimal integer. Use ``restartPolicy: Never``: no kubelet restarts containers here. The stage
(:data:`EXIT_CODE_STAGE`) has weight 1000000 while the default ``pod-complete`` stage has weight 0, and
KWOK picks among matching stages by weight, skipping weight-0 stages whenever some matching stage has a
positive weight (``Lifecycle.Match`` in sigs.k8s.io/kwok v0.8.0 ``pkg/utils/lifecycle``), so such a pod is
never completed successfully first.

Only the Python standard library, ``cryptography`` and PyYAML are used here.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "API_TIER",
    "DEFAULT_CONTROL_PLANE_DIR",
    "EXIT_CODE_ANNOTATION",
    "EXIT_CODE_STAGE",
    "KUBERNETES_VERSION",
    "NODES_TIER",
    "Binaries",
    "ControlPlane",
    "ControlPlaneError",
    "MissingBinariesError",
    "Pki",
    "find_binaries",
    "generate_pki",
]

KUBERNETES_VERSION: Final = "v1.36.3"
DEFAULT_CONTROL_PLANE_DIR: Final = Path("~/.cache/scaleml/control-plane") / f"k8s-{KUBERNETES_VERSION}"
EXIT_CODE_ANNOTATION: Final = "scaleml.dev/kwok-exit-code"

#: Binaries (and the KWOK stages file) needed by each tier.
API_TIER: Final = ("etcd", "kube-apiserver")
NODES_TIER: Final = (*API_TIER, "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml")

SERVICE_CLUSTER_IP_RANGE: Final = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER: Final = "scaleml-admin"
FRONT_PROXY_CLIENT: Final = "front-proxy-client"

#: The extra KWOK stage behind :data:`EXIT_CODE_ANNOTATION` (see the module docstring).
EXIT_CODE_STAGE: Final = f"""\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: scaleml-pod-exit-code
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Running'
    - key: '.metadata.annotations["{EXIT_CODE_ANNOTATION}"]'
      operator: 'Exists'
    - key: '.metadata.annotations["{EXIT_CODE_ANNOTATION}"]'
      operator: 'NotIn'
      values:
      - '0'
  # pod-complete (which also matches Running Job pods) has weight 0: any matching stage with a
  # positive weight wins, always.
  weight: 1000000
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      {{{{ $exitCode := index .metadata.annotations "{EXIT_CODE_ANNOTATION}" }}}}
      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "False"
        reason: PodFailed
        type: Ready
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "False"
        reason: PodFailed
        type: ContainersReady
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{{{ $exitCode }}}}
            finishedAt: {{{{ $now | Quote }}}}
            reason: Error
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      phase: Failed
"""

_LOG_TAIL_LINES: Final = 40


class ControlPlaneError(RuntimeError):
    """A component failed to start or to become ready; the message carries the tail of its log."""


class MissingBinariesError(ControlPlaneError):
    """Some control-plane binaries are not installed."""

    def __init__(self, missing: Sequence[str], searched: Sequence[Path]) -> None:
        self.missing = tuple(missing)
        self.searched = tuple(searched)
        where = ", ".join(str(p) for p in searched)
        super().__init__(
            f"control-plane binaries not found: {', '.join(self.missing)} (searched: {where}); "
            "`make control-plane` builds them into $SCALEML_CONTROL_PLANE_DIR "
            f"(default {DEFAULT_CONTROL_PLANE_DIR})"
        )


# --------------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Where each control-plane binary lives; ``None`` when it was not found."""

    etcd: Path | None
    kube_apiserver: Path | None
    kube_controller_manager: Path | None
    kube_scheduler: Path | None
    kwok: Path | None
    kwok_stages: Path | None
    searched: tuple[Path, ...] = ()

    def _by_name(self) -> dict[str, Path | None]:
        return {
            "etcd": self.etcd,
            "kube-apiserver": self.kube_apiserver,
            "kube-controller-manager": self.kube_controller_manager,
            "kube-scheduler": self.kube_scheduler,
            "kwok": self.kwok,
            "kwok-stages.yaml": self.kwok_stages,
        }

    def missing(self, tier: Iterable[str] = NODES_TIER) -> list[str]:
        """Names (as in :data:`API_TIER` / :data:`NODES_TIER`) of the files the tier needs but lacks."""
        found = self._by_name()
        return [name for name in tier if found[name] is None]

    def require(self, tier: Iterable[str] = NODES_TIER) -> None:
        """Raise :class:`MissingBinariesError` unless everything the tier needs is present."""
        missing = self.missing(tier)
        if missing:
            raise MissingBinariesError(missing, self.searched)

    def path(self, name: str) -> Path:
        """The path of one file by name, or :class:`MissingBinariesError`."""
        found = self._by_name()[name]
        if found is None:
            raise MissingBinariesError([name], self.searched)
        return found


def control_plane_dir() -> Path:
    """``$SCALEML_CONTROL_PLANE_DIR``, or the default cache directory."""
    raw = os.environ.get("SCALEML_CONTROL_PLANE_DIR") or str(DEFAULT_CONTROL_PLANE_DIR)
    return Path(raw).expanduser()


def find_binaries() -> Binaries:
    """Locate the binaries: per binary ``$KUBEBUILDER_ASSETS``, then ``$SCALEML_CONTROL_PLANE_DIR/bin``."""
    base = control_plane_dir()
    dirs: list[Path] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        dirs.append(Path(assets).expanduser())
    dirs.append(base / "bin")

    def executable(name: str) -> Path | None:
        for directory in dirs:
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        return None

    stages = base / "kwok-stages.yaml"
    return Binaries(
        etcd=executable("etcd"),
        kube_apiserver=executable("kube-apiserver"),
        kube_controller_manager=executable("kube-controller-manager"),
        kube_scheduler=executable("kube-scheduler"),
        kwok=executable("kwok"),
        kwok_stages=stages if stages.is_file() else None,
        searched=(*dirs, stages),
    )


# --------------------------------------------------------------------------------------------------
# PKI
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files written by :func:`generate_pki`."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    admin_cert: Path
    admin_key: Path
    front_proxy_cert: Path
    front_proxy_key: Path
    service_account_key: Path
    service_account_pub: Path


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def generate_pki(directory: Path, *, days: int = 7) -> Pki:
    """Write one CA, an apiserver serving cert, an admin client cert and a service-account key pair.

    The certificates carry SKI/AKI, KeyUsage and a critical CA BasicConstraints so that clients with
    strict X.509 checking (Python >= 3.13's default SSL context) accept them.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)

    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scaleml-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        subject: x509.Name, usage: x509.ObjectIdentifier, sans: Sequence[x509.GeneralName] = ()
    ) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key = _new_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    service_ip = next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts())
    server_key, server_cert = leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(service_ip),
        ],
    )
    admin_key, admin_cert = leaf(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                x509.NameAttribute(NameOID.COMMON_NAME, ADMIN_USER),
            ]
        ),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # The apiserver's client certificate towards aggregated API servers (front proxy); the same CA
    # verifies it as --requestheader-client-ca-file, restricted to this CN.
    proxy_key, proxy_cert = leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, FRONT_PROXY_CLIENT)]),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    sa_key = _new_key()

    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        apiserver_cert=directory / "apiserver.crt",
        apiserver_key=directory / "apiserver.key",
        admin_cert=directory / "admin.crt",
        admin_key=directory / "admin.key",
        front_proxy_cert=directory / "front-proxy-client.crt",
        front_proxy_key=directory / "front-proxy-client.key",
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )
    pem = serialization.Encoding.PEM
    contents: dict[Path, bytes] = {
        pki.ca_cert: ca_cert.public_bytes(pem),
        pki.ca_key: _key_pem(ca_key),
        pki.apiserver_cert: server_cert.public_bytes(pem),
        pki.apiserver_key: _key_pem(server_key),
        pki.admin_cert: admin_cert.public_bytes(pem),
        pki.admin_key: _key_pem(admin_key),
        pki.front_proxy_cert: proxy_cert.public_bytes(pem),
        pki.front_proxy_key: _key_pem(proxy_key),
        pki.service_account_key: _key_pem(sa_key),
        pki.service_account_pub: sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    for path, data in contents.items():
        path.write_bytes(data)
        if path.suffix == ".key":
            path.chmod(0o600)
    return pki


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log, or why it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _proc_status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    """An opener that never uses proxies (everything is on 127.0.0.1) and trusts ``context``."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


@dataclasses.dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    started_at: float

    def failure(self, what: str) -> ControlPlaneError:
        code = self.process.poll()
        state = f"exited with code {code}" if code is not None else "still running"
        return ControlPlaneError(f"{self.name} {what} ({state}); last lines of {self.log_path}:\n{tail(self.log_path)}")


# --------------------------------------------------------------------------------------------------
# The control plane
# --------------------------------------------------------------------------------------------------


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
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="scaleml-cp-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._etcd_dir: Path | None = None
        self._etcd_url = ""
        self._components: list[_Component] = []
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
        if self._server is None:
            raise ControlPlaneError("the control plane is not started (call start_api())")
        return self._server

    @property
    def kubeconfig(self) -> Path:
        """A kubeconfig file for the ``system:masters`` admin user (client certificate)."""
        if self._kubeconfig is None:
            raise ControlPlaneError("the control plane is not started (call start_api())")
        return self._kubeconfig

    @property
    def pki(self) -> Pki:
        if self._pki is None:
            raise ControlPlaneError("the control plane is not started (call start_api())")
        return self._pki

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

    def _start_etcd(self) -> _Component:
        shm = Path("/dev/shm")
        parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.workdir
        self._etcd_dir = Path(tempfile.mkdtemp(prefix="scaleml-etcd-", dir=parent))
        client, peer = self._free_port(), self._free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._etcd_url = client_url
        etcd = self._spawn(
            "etcd",
            self.binaries.path("etcd"),
            [
                "--name=scaleml",
                f"--data-dir={self._etcd_dir / 'data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=scaleml={peer_url}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
        )
        self._wait(etcd, "did not become healthy", lambda: self._http_ok(f"{client_url}/health", None))
        return etcd

    def _start_apiserver(self) -> _Component:
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
            [
                f"--etcd-servers={self._etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                # The "kubernetes" Service's Endpoints may not hold a loopback address (Endpoints
                # validation rejects it), so advertise 127.0.0.1 but don't reconcile those endpoints.
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.workdir / 'pki'}",
                f"--tls-cert-file={pki.apiserver_cert}",
                f"--tls-private-key-file={pki.apiserver_key}",
                f"--client-ca-file={pki.ca_cert}",
                # TokenRequest: signing key (private) + verification key (public) + issuer.
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                # Front proxy: lets aggregated APIs (an APIService, e.g. a fake metrics.k8s.io) work,
                # and fills the requestheader CA of kube-system/extension-apiserver-authentication,
                # whose absence makes kube-controller-manager and kube-scheduler log errors forever.
                f"--requestheader-client-ca-file={pki.ca_cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy_cert}",
                f"--proxy-client-key-file={pki.front_proxy_key}",
                "--authorization-mode=RBAC",
                # Privileged pods pass API validation, so PodSecurity admission is what rejects them
                # in namespaces labelled pod-security.kubernetes.io/enforce=restricted.
                "--allow-privileged=true",
                # No --enable/--disable-admission-plugins: the default set stays, including
                # PodSecurity and ServiceAccount. ServiceAccount admission is kept (as in a real
                # cluster): it rejects pods whose ServiceAccount does not exist. For "default" it
                # retries for ~1-2 s, and in the nodes tier kube-controller-manager creates it well
                # within that, so pods in a fresh namespace are admitted. In the API-only tier nothing
                # creates it: tests there that create Pods directly must create the ServiceAccount the
                # pod uses (also "default") first, or each attempt fails after ~2 s with 403.
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait(apiserver, "did not become ready", lambda: self._http_ok(f"{server}/readyz", context))
        self._server = server
        self._kubeconfig = self._write_kubeconfig(
            self.workdir / "admin.kubeconfig",
            "scaleml-admin",
            {
                "client-certificate-data": _b64(pki.admin_cert.read_bytes()),
                "client-key-data": _b64(pki.admin_key.read_bytes()),
            },
        )
        return apiserver

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

    def _component_kubeconfig_args(self) -> list[str]:
        kubeconfig = str(self.kubeconfig)
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
        ]

    def _start_controller_manager(self) -> _Component:
        pki, port = self.pki, self._free_port()
        kcm = self._spawn(
            "kube-controller-manager",
            self.binaries.path("kube-controller-manager"),
            [
                *self._component_kubeconfig_args(),
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kube-controller-manager'}",
                "--leader-elect=false",
                "--controllers=*",
                # Token controller (ServiceAccount token Secrets, kube-root-ca.crt ConfigMaps).
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                # CSR signing, so that CertificateSigningRequests can be approved and signed too.
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait(
            kcm,
            "did not become healthy",
            lambda: self._http_ok(f"https://127.0.0.1:{port}/healthz", _insecure_context()),
        )
        return kcm

    def _start_scheduler(self) -> _Component:
        port = self._free_port()
        config = self.workdir / "kube-scheduler.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(self.kubeconfig)},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        scheduler = self._spawn(
            "kube-scheduler",
            self.binaries.path("kube-scheduler"),
            [
                f"--config={config}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kube-scheduler'}",
                "--v=1",
            ],
        )
        self._wait(
            scheduler,
            "did not become healthy",
            lambda: self._http_ok(f"https://127.0.0.1:{port}/healthz", _insecure_context()),
        )
        return scheduler

    def _start_kwok(self, extra_stages: Sequence[str | Path]) -> _Component:
        configs = [self.binaries.path("kwok-stages.yaml")]
        stage_texts = [EXIT_CODE_STAGE, *(s.read_text() if isinstance(s, Path) else s for s in extra_stages)]
        for index, text in enumerate(stage_texts):
            path = self.workdir / f"kwok-stages-extra-{index}.yaml"
            path.write_text(text)
            configs.append(path)
        kwok_home = self.workdir / "kwok"
        kwok_home.mkdir(exist_ok=True)
        return self._spawn(
            "kwok",
            self.binaries.path("kwok"),
            [
                f"--kubeconfig={self.kubeconfig}",
                *(f"--config={c}" for c in configs),
                "--manage-all-nodes=true",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.0.0.1",
            ],
            # kwok also loads $KWOK_WORKDIR/kwok.yaml (default ~/.kwok/kwok.yaml) if it exists: isolate it.
            env={"KWOK_WORKDIR": str(kwok_home)},
        )

    def _create_node(self, name: str) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "node.kubernetes.io/instance-type": "kwok-gpu",
                    "type": "kwok",
                },
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {},
            "status": {
                "capacity": dict(self.node_capacity),
                "allocatable": dict(self.node_capacity),
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": KUBERNETES_VERSION,
                    "kubeProxyVersion": KUBERNETES_VERSION,
                },
            },
        }
        self._request("POST", "/api/v1/nodes", node)

    def _node_ready(self, name: str) -> bool:
        node = self._get(f"/api/v1/nodes/{name}")
        if node is None:
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

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
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "scaleml-test",
                    "cluster": {
                        "server": self._server,
                        "certificate-authority-data": _b64(self.pki.ca_cert.read_bytes()),
                    },
                }
            ],
            "users": [{"name": user, "user": dict(credentials)}],
            "contexts": [{"name": "scaleml-test", "context": {"cluster": "scaleml-test", "user": user}}],
            "current-context": "scaleml-test",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    # ---------------------------------------------------------------- measurements

    def memory_usage(self) -> dict[str, tuple[int | None, int | None]]:
        """Per running component: (current RSS, peak RSS) in KiB, from /proc/<pid>/status."""
        return {
            c.name: (_proc_status_kib(c.process.pid, "VmRSS"), _proc_status_kib(c.process.pid, "VmHWM"))
            for c in self._components
            if c.process.poll() is None
        }

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
        """SIGTERM, up to 10 s, SIGKILL: first the API clients together, then kube-apiserver, then etcd.

        The order matters: an apiserver whose etcd is already gone spends its whole grace period
        retrying etcd connections instead of shutting down.
        """
        victims = [c for c in self._components if c.name not in keep]
        core = ("kube-apiserver", "etcd")
        waves = [[c for c in victims if c.name not in core]] + [[c for c in victims if c.name == name] for name in core]
        for wave in waves:
            for component in wave:
                if component.process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        component.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10.0
            for component in wave:
                try:
                    component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        component.process.kill()
                    component.process.wait()
                component.log_file.close()
        self._components = [c for c in self._components if c not in victims]

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    # ---------------------------------------------------------------- internals

    def _free_port(self) -> int:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in self._used_ports:
                self._used_ports.add(port)
                return port

    def _spawn(self, name: str, binary: Path, args: Sequence[str], env: Mapping[str, str] | None = None) -> _Component:
        log_path = self.workdir / f"{name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed in _terminate_all
        environment = dict(os.environ)
        no_proxy = ",".join(filter(None, [environment.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
        environment.update({"NO_PROXY": no_proxy, "no_proxy": no_proxy, **(env or {})})
        command = [str(binary), *args]
        log_file.write(f"# {' '.join(command)}\n".encode())
        log_file.flush()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=environment,
                start_new_session=True,
            )
        except OSError as exc:
            log_file.close()
            raise ControlPlaneError(f"cannot start {name} ({binary}): {exc}") from exc
        component = _Component(name, process, log_path, log_file, time.monotonic())
        self._components.append(component)
        return component

    def _component(self, name: str) -> _Component:
        for component in self._components:
            if component.name == name:
                return component
        raise ControlPlaneError(f"{name} is not running")

    def _wait(self, component: _Component, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """Poll ``ready`` until it is true; fail fast (with the log tail) if the component exits."""
        began = time.monotonic()
        deadline = began + (self.timeout if timeout is None else timeout)
        delay = 0.05
        while True:
            if component.process.poll() is not None:
                raise component.failure(what)
            if ready():
                return
            if time.monotonic() > deadline:
                raise component.failure(f"{what} within {deadline - began:.0f} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    @staticmethod
    def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
        try:
            with _opener(context).open(urllib.request.Request(url), timeout=5) as response:
                return bool(response.status == 200)
        except OSError:  # URLError, HTTPError, ssl.SSLError and connection errors are all OSErrors
            return False

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
            with _opener(self._ssl).open(request, timeout=30) as response:
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


def _insecure_context() -> ssl.SSLContext:
    """For the components' own /healthz endpoints, which serve self-signed certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
