"""A real node beside the suite's control plane: containerd, kubelet, kube-proxy, CoreDNS, a relay.

:class:`RealNode` starts them as local processes (root, a single node per machine: the kubelet's
ports are fixed) and ends them leaving the host as it found them: the pods deleted through the
API and torn down by the kubelet, then every process stopped, what containerd mounted unmounted,
the kubelet's cgroups, iptables rules and directories outside the node's own removed, the bridge
deleted and the sysctls the kubelet and the network changed written back. ``tests/node`` checks
that against a :func:`host.snapshot` taken before.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Final

import yaml

from tests.support.controlplane import ControlPlane, ControlPlaneError, control_plane_dir
from tests.support.controlplane.processes import Component, spawn, tail, terminate, wait_until
from tests.support.kubectl import Kubectl
from tests.support.node import host, network
from tests.support.node.config import (
    API_RELAY_PORT,
    NODE_NAME,
    Layout,
    cni_config,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
    node_ip,
    registry_hosts,
)
from tests.support.node.images import oci_archive, pause_rootfs

DEFAULT_NODE_DIR: Final = Path("~/.cache/scaleml/node/containerd-v2.4.2")
SANDBOX_IMAGE: Final = "scaleml.dev/pause:1"
#: Written outside the node's directories by the kubelet and containerd whatever their settings say;
#: removed on the way down unless they were there before.
FOREIGN_PATHS: Final = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/var/lib/cni"),
    Path("/run/containerd"),
    Path("/run/nri"),
    Path("/etc/cni"),
    Path("/opt/cni"),
)
#: The longest path a unix socket may have (sun_path holds 108 bytes with the terminating NUL).
MAX_SOCKET_PATH: Final = 107
#: The node's sockets: short, since the shims' are <socket dir>/<64 hex digits>.
RUN_DIR: Final = Path("/run/scaleml-node")


def node_dir() -> Path:
    """``$SCALEML_NODE_DIR``, or the default cache directory (``make node`` builds into it)."""
    return Path(os.environ.get("SCALEML_NODE_DIR") or str(DEFAULT_NODE_DIR)).expanduser()


@dataclasses.dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    bin: Path
    cni: Path

    def path(self, name: str) -> Path:
        return self.bin / name

    def missing(self) -> list[str]:
        wanted = [self.kubelet, self.kube_proxy, *(self.bin / b for b in _NODE_BINARIES)]
        wanted += [self.cni / plugin for plugin in ("bridge", "host-local", "loopback", "portmap")]
        absent = [str(path) for path in wanted if not os.access(path, os.X_OK)]
        return absent + [tool for tool in ("iptables", "ip", "socat") if shutil.which(tool) is None]


_NODE_BINARIES: Final = ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "coredns", "pause")


def find_node_binaries() -> NodeBinaries:
    kube = control_plane_dir() / "bin"
    base = node_dir()
    return NodeBinaries(kubelet=kube / "kubelet", kube_proxy=kube / "kube-proxy", bin=base / "bin", cni=base / "cni")


class RealNode:
    """One real node, registered as :data:`NODE_NAME`: a kubelet, containerd, runc, CNI, kube-proxy and CoreDNS."""

    def __init__(self, plane: ControlPlane, binaries: NodeBinaries, workdir: Path) -> None:
        self.plane = plane
        self.binaries = binaries
        self.workdir = workdir
        self.layout = Layout(root=workdir / "node", run=RUN_DIR)
        self._components: list[Component] = []
        self._sysctls: dict[str, str] = {}
        self._foreign: list[Path] = []
        self.started = False
        # Anything begun that a stop must undo (a start that failed half-way too).
        self._begun = False
        self._atexit_registered = False
        self.startup_seconds: float | None = None

    @property
    def name(self) -> str:
        return NODE_NAME

    @functools.cached_property
    def kubectl(self) -> Kubectl:
        # Made when first needed: the node may be set up before its control plane starts.
        return Kubectl(self.plane.kubeconfig)

    # ---------------------------------------------------------------- up

    def start(self) -> None:
        """Starts the node, or does nothing if it runs. The images imported before a stop are kept."""
        if self.started:
            return
        if not self._atexit_registered:
            # Should the run end without its fixtures' teardown: no node outlives it.
            atexit.register(self.remove)
            self._atexit_registered = True
        # The kubelet listens on sockets in its directory, named with ten digits.
        socket = self.layout.kubelet_dir / "pod-resources" / ("0" * 10)
        if len(bytes(socket)) > MAX_SOCKET_PATH:
            raise ControlPlaneError(
                f"the node's directory {self.workdir} is too deep: the kubelet's sockets in it would pass the "
                f"{MAX_SOCKET_PATH} bytes a unix socket's path may have"
            )
        began = time.monotonic()
        self._begun = True
        self._sysctls = host.snapshot().sysctls
        self._foreign = [path for path in FOREIGN_PATHS if not path.exists()]
        for directory in (self.layout.root, self.layout.run, self.layout.cni_conf_dir, self.layout.pod_logs):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            network.up()
            # A pod reaching another through a Service is forwarded from the bridge back onto it.
            host.write_sysctl("net.ipv4.ip_forward", "1")
            self._start_containerd()
            self._import_pause()
            self._start_dns()
            self._start_relay()
            self._start_kubelet()
            self._start_kube_proxy()
        except BaseException:
            self.stop()
            raise
        self.started = True
        self.startup_seconds = time.monotonic() - began

    def _spawn(self, name: str, binary: Path, args: Sequence[str], env: dict[str, str] | None = None) -> Component:
        component = spawn(self.workdir, name, binary, args, env)
        self._components.append(component)
        return component

    def _start_containerd(self) -> None:
        config = self.layout.containerd_config
        config.write_text(containerd_config(self.layout, self.binaries.path("runc"), self.binaries.cni, SANDBOX_IMAGE))
        (self.layout.cni_conf_dir / "10-scaleml.conflist").write_text(json.dumps(cni_config(self.layout)))
        registries = self.layout.registry_config / "_default"
        registries.mkdir(parents=True, exist_ok=True)
        (registries / "hosts.toml").write_text(registry_hosts())
        # The shim is found on PATH.
        path = f"{self.binaries.bin}:{os.environ.get('PATH', '')}"
        containerd = self._spawn(
            "containerd", self.binaries.path("containerd"), ["--config", str(config)], {"PATH": path}
        )
        wait_until(containerd, "did not open its socket", self.layout.containerd_socket.exists, 30)

    def _ctr_command(self) -> list[str]:
        return [str(self.binaries.path("ctr")), "--address", str(self.layout.containerd_socket), "-n", "k8s.io"]

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._ctr_command(), *args], capture_output=True, text=True, check=False, timeout=600)

    def import_image(self, write: Callable[[IO[bytes]], None]) -> None:
        """Imports the OCI archive `write` produces into the node's image store, where pods find it
        without pulling. Streamed into `ctr`: the archive is never on disk, only its layer."""
        command = [
            *self._ctr_command(),
            "images",
            "import",
            "--all-platforms",
            "-",
        ]
        # Its progress to a file: a pipe nobody reads while the archive is written would fill and stall it.
        with (
            open(self.workdir / "ctr-import.log", "ab") as log,
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT) as ctr,
        ):
            assert ctr.stdin is not None
            try:
                write(ctr.stdin)
            finally:
                ctr.stdin.close()
            if ctr.wait(timeout=600) != 0:
                raise ControlPlaneError(f"ctr images import failed; see {log.name}:\n{tail(Path(log.name))}")

    def _import_pause(self) -> None:
        rootfs = pause_rootfs(self.workdir / "pause-rootfs", self.binaries.path("pause"))
        self.import_image(
            lambda out: oci_archive(rootfs, SANDBOX_IMAGE, out, scratch=self.workdir, entrypoint=["/pause"])
        )

    def _start_dns(self) -> None:
        config = self.workdir / "Corefile"
        config.write_text(corefile(self.plane.kubeconfig, node_ip()))
        self._spawn("coredns", self.binaries.path("coredns"), ["-conf", str(config)])

    def _start_relay(self) -> None:
        # Pods reach the API server as in-cluster clients do: the kubernetes Service, whose endpoint
        # is this relay on the node's address (the API server itself binds loopback only).
        port = self.plane.server.rsplit(":", 1)[1]
        listen = f"TCP-LISTEN:{API_RELAY_PORT},bind={node_ip()},reuseaddr,fork"
        socat = shutil.which("socat")
        assert socat is not None
        self._spawn("apiserver-relay", Path(socat), [listen, f"TCP:127.0.0.1:{port}"])
        endpoints = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [node_ip()], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": API_RELAY_PORT, "protocol": "TCP"}],
        }
        self.kubectl.run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(endpoints))

    def _start_kubelet(self) -> None:
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("")
        config = self.workdir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(self.layout, node_ip(), resolv, self.plane.ca_file)))
        kubelet = self._spawn(
            "kubelet",
            self.binaries.kubelet,
            [
                f"--config={config}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={self.layout.kubelet_dir}",
                f"--cert-dir={self.layout.kubelet_dir / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={node_ip()}",
                "--v=1",
            ],
        )
        wait_until(kubelet, "did not make its node Ready", self._ready, 60)

    def _ready(self) -> bool:
        result = self.kubectl.run("get", "node", NODE_NAME, "-o", "json", check=False)
        if result.returncode != 0:
            return False
        conditions = json.loads(result.stdout).get("status", {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def _start_kube_proxy(self) -> None:
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(self.plane.kubeconfig)))
        self._spawn("kube-proxy", self.binaries.kube_proxy, [f"--config={config}", f"--hostname-override={NODE_NAME}"])

    # ---------------------------------------------------------------- down

    def stop(self) -> None:
        """Ends everything `start()` began, in an order that leaves nothing behind; safe to call twice."""
        if not self._begun:
            return
        self._delete_pods()
        # The kubelet and kube-proxy go first, containerd after them, the relay and DNS with them.
        terminate([c for c in self._components if c.name != "containerd"])
        terminate([c for c in self._components if c.name == "containerd"])
        self._components = []
        self._kill_shims()
        self._unmount()
        self._remove_cgroups()
        if shutil.which("iptables") and self.binaries.kube_proxy.exists():
            subprocess.run([str(self.binaries.kube_proxy), "--cleanup"], capture_output=True, check=False)
        network.down()
        for key, value in self._sysctls.items():
            if host.read_sysctl(key) != value:
                with contextlib.suppress(OSError):
                    host.write_sysctl(key, value)
        for path in self._foreign:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(self.layout.run, ignore_errors=True)
        self.kubectl.run("delete", "node", NODE_NAME, "--ignore-not-found", check=False)
        self.started = self._begun = False

    def remove(self) -> None:
        """Stops the node and deletes its state: the images (gigabytes) and the containers' files."""
        self.stop()
        shutil.rmtree(self.layout.root, ignore_errors=True)

    def running(self) -> list[str]:
        """What of the node still runs: its components, and the shims of containers."""
        alive = [c.name for c in self._components if c.process.poll() is None]
        return alive + [f"shim {pid}" for pid in _pids_of(str(self.binaries.path("containerd-shim-runc-v2")))]

    def _delete_pods(self) -> None:
        """Deletes the node's pods and waits for the kubelet to tear their sandboxes down (CNI DEL)."""
        if not any(c.name == "kubelet" and c.process.poll() is None for c in self._components):
            return
        selector = f"spec.nodeName={NODE_NAME}"
        # Quickly: the node is going, and a container that ignores SIGTERM would hold it for 30 s.
        self.kubectl.run(
            "delete", "pods", "-A", "--field-selector", selector, "--grace-period=1", "--wait=false", check=False
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = self.ctr("tasks", "ls", "-q")
            if listed.returncode != 0 or not listed.stdout.strip():
                return
            time.sleep(0.5)

    def _kill_shims(self) -> None:
        """Kills what the kubelet did not stop: the containers' processes, then the shims that ran them.

        A shim's death leaves its container running, and a running container keeps its network
        namespace, its veth and its cgroups."""
        deadline = time.monotonic() + 10
        while (pids := _pids_in(_cgroup_trees())) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        shim = str(self.binaries.path("containerd-shim-runc-v2"))
        for pid in _pids_of(shim):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)

    def _unmount(self) -> None:
        roots = (str(self.layout.root), str(self.layout.run), "/run/containerd", "/var/lib/kubelet")
        for target in sorted(_mounts_under(roots), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        for top in _cgroup_trees():
            for directory in sorted(
                (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


def _cgroup_trees() -> list[Path]:
    """The kubelet's cgroups (cgroupfs driver): `kubepods` at the top of each hierarchy."""
    return [
        hierarchy / "kubepods" for hierarchy in Path("/sys/fs/cgroup").iterdir() if (hierarchy / "kubepods").is_dir()
    ]


def _pids_in(trees: Sequence[Path]) -> set[int]:
    pids: set[int] = set()
    for tree in trees:
        for procs in tree.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(line) for line in procs.read_text().split())
    return pids


def _pids_of(executable: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "exe") == executable:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _mounts_under(roots: Sequence[str]) -> list[str]:
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if any(target == root or target.startswith(root + "/") for root in roots):
            targets.append(target)
    return targets
