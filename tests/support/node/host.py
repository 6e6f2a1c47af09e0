"""A snapshot of the host state a real node may change, and the differences between two snapshots.

A node run sets sysctls, adds routes, links, iptables rules, mounts, network namespaces and cgroups;
a test takes a snapshot before and after it and asserts that `differences` finds none.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

PROC_SYS: Final = Path("/proc/sys")
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
NETNS_DIRS: Final = (Path("/run/netns"), Path("/var/run/netns"))
MOUNT_PREFIXES: Final = ("/run", "/var/lib", "/var/run", "/tmp", "/root/.cache", "/dev/shm")

SYSCTLS: Final[tuple[str, ...]] = (
    # The kubelet sets these at start (unless protectKernelDefaults, which refuses to start instead):
    # reboot on panic and oops, always overcommit, and keyring quotas large enough for a session
    # keyring per container.
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    # kube-proxy and the node's network set the rest: forwarding for the pods' traffic, NodePorts on
    # 127.0.0.1 (route_localnet), bridged pod-to-pod traffic through iptables (br_netfilter's keys,
    # absent until that module loads), conntrack's table size, and reverse-path filtering, which the
    # node may loosen where strict filtering would drop service traffic.
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.ipv4.conf.all.rp_filter",
    "net.ipv6.conf.all.forwarding",
)

# A chain's policy line carries packet and byte counters, which change with any traffic.
_CHAIN_COUNTERS: Final = re.compile(r"^(:\S+ \S+) \[\d+:\d+\]$")
# Routes learnt from router advertisements count down their lifetime.
_ROUTE_EXPIRY: Final = re.compile(r" expires \d+sec")


@dataclasses.dataclass(frozen=True)
class HostState:
    """What a node run may leave behind on the host (see `snapshot`)."""

    sysctls: dict[str, str]
    routes: tuple[str, ...]
    links: tuple[str, ...]
    iptables: tuple[str, ...]
    mounts: tuple[str, ...]
    netns: tuple[str, ...]
    cgroups: tuple[str, ...]


def snapshot(mount_prefixes: Sequence[str] = MOUNT_PREFIXES) -> HostState:
    """The host's state now; mounts only under `mount_prefixes` (the rest of the host's are not the node's)."""
    return HostState(
        sysctls={key: value for key in SYSCTLS if (value := read_sysctl(key)) is not None},
        routes=tuple(sorted(_routes())),
        links=tuple(sorted(_links())),
        iptables=tuple(_iptables()),
        mounts=tuple(sorted(_mounts(mount_prefixes))),
        netns=tuple(sorted(_netns())),
        cgroups=tuple(sorted(_cgroups())),
    )


def differences(before: HostState, after: HostState) -> list[str]:
    """One line per difference between two snapshots, such as `link added: scaleml0`; empty when they agree."""
    lines = []
    for key in dict.fromkeys([*before.sysctls, *after.sysctls]):
        old, new = before.sysctls.get(key, "absent"), after.sysctls.get(key, "absent")
        if old != new:
            lines.append(f"sysctl {key}: {old} -> {new}")
    lines += _changes("route", before.routes, after.routes)
    lines += _changes("link", before.links, after.links)
    lines += _changes("iptables rule", _iptables_rules(before.iptables), _iptables_rules(after.iptables))
    lines += _changes("mount", before.mounts, after.mounts)
    lines += _changes("netns", before.netns, after.netns)
    lines += _changes("cgroup", before.cgroups, after.cgroups)
    return lines


def read_sysctl(key: str) -> str | None:
    """A sysctl's value, such as `read_sysctl("net.ipv4.ip_forward")`; None when the kernel lacks it."""
    try:
        return _sysctl_path(key).read_text().strip()
    except FileNotFoundError:
        return None


def write_sysctl(key: str, value: str) -> None:
    """Sets a sysctl (needs root), such as `write_sysctl("net.ipv4.ip_forward", "0")`."""
    _sysctl_path(key).write_text(f"{value}\n")


def _sysctl_path(key: str) -> Path:
    # Only the dots separate: `net.bridge.bridge-nf-call-iptables` keeps its dashes.
    return PROC_SYS.joinpath(*key.split("."))


def _changes(kind: str, before: Iterable[str], after: Iterable[str]) -> list[str]:
    # Counted, not compared as sets: a second mount stacked on the same point is a change too.
    old, new = collections.Counter(before), collections.Counter(after)
    added = [f"{kind} added: {item}" for item in sorted((new - old).elements())]
    removed = [f"{kind} removed: {item}" for item in sorted((old - new).elements())]
    return added + removed


#: A built-in chain that accepts and holds no rule is what a table the kernel has not loaded yet
#: amounts to: listing one (iptables-save lists a table once anything touched it) changes nothing.
_BUILTIN_ACCEPT: Final = re.compile(r":(PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ACCEPT")


def _iptables_rules(lines: Iterable[str]) -> list[str]:
    # A rule means nothing without its table: name it as iptables takes it (filter, the default, unnamed).
    rules = []
    table = "filter"
    for line in lines:
        if line.startswith("*"):
            table = line.removeprefix("*")
        elif line != "COMMIT" and not _BUILTIN_ACCEPT.fullmatch(line):
            rules.append(line if table == "filter" else f"-t {table} {line}")
    return rules


def _output(*command: str) -> list[str]:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()


def _routes() -> list[str]:
    lines = _output("ip", "-4", "route", "show", "table", "all") + _output("ip", "-6", "route", "show", "table", "all")
    return [_ROUTE_EXPIRY.sub("", line) for line in lines]


def _links() -> list[str]:
    # `2: veth1a2b@if3: <BROADCAST,...`: the name without the peer's index after the `@`.
    return [line.split(": ", 2)[1].split("@", 1)[0] for line in _output("ip", "-o", "link", "show")]


def _iptables() -> list[str]:
    lines = []
    for binary in ("iptables-save", "ip6tables-save"):
        if shutil.which(binary) is None:
            continue
        for line in _output(binary):
            if line and not line.startswith("#"):
                lines.append(_CHAIN_COUNTERS.sub(r"\1", line))
    return lines


def _mounts(prefixes: Sequence[str]) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [
        point
        for point in points
        if any(point == prefix or point.startswith(f"{prefix.rstrip('/')}/") for prefix in prefixes)
    ]


def _netns() -> list[str]:
    # /var/run is usually a link to /run: list each directory once.
    directories = dict.fromkeys(directory.resolve() for directory in NETNS_DIRS if directory.is_dir())
    return [entry.name for directory in directories for entry in directory.iterdir()]


def _cgroups() -> list[str]:
    if not CGROUP_ROOT.is_dir():
        return []
    # cgroup v1 mounts one hierarchy per controller under the root, v2 is the root itself. The kubelet
    # makes `kubepods` (cgroupfs driver) or `kubepods.slice` (systemd) at the top of each, containerd
    # its namespace's (`k8s.io`) for what runs outside a pod: every directory there counts. Links
    # such as cpu -> cpu,cpuacct name a hierarchy already listed.
    hierarchies = [CGROUP_ROOT, *(path for path in CGROUP_ROOT.iterdir() if path.is_dir() and not path.is_symlink())]
    return [
        str(path)
        for hierarchy in hierarchies
        for path in hierarchy.iterdir()
        if path.is_dir() and not path.is_symlink()
    ]
