"""The real node's network on the host: a bridge for the pods, routes to it, and the guard rules.

Traffic may go only to loopback and to the network namespaces the run creates: pods get no default
route (cni_config) and no masquerade, the service range is routed onto the bridge, and two rules in
the mangle table's FORWARD chain drop whatever the host would forward to or from anywhere but the
bridge (forwarding itself must be on: a pod reaching another through a Service is forwarded from
the bridge back onto it). One more rule keeps pods off the kubelet's port on the node's address,
which the API server reaches over loopback.
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess
from typing import Final

from tests.support.controlplane.pki import SERVICE_CLUSTER_IP_RANGE
from tests.support.node.config import BRIDGE, POD_CIDR, node_ip

#: (table, chain, rule): inserted at the top of their chains on the way up, deleted on the way down.
GUARD_RULES: Final = (
    ("mangle", "FORWARD", ("!", "-o", BRIDGE, "-j", "DROP")),
    ("mangle", "FORWARD", ("!", "-i", BRIDGE, "-j", "DROP")),
    ("filter", "INPUT", ("-i", BRIDGE, "-p", "tcp", "--dport", "10250", "-j", "DROP")),
)


class NetworkError(RuntimeError):
    pass


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _routed(network: str) -> list[str]:
    """Routes of the host that overlap `network`."""
    wanted = ipaddress.ip_network(network)
    overlapping = []
    for line in _run("ip", "-4", "route", "show", "table", "all").stdout.splitlines():
        destination = line.split()[0] if line.split() else ""
        try:
            routed = ipaddress.ip_network(destination, strict=False)
        except ValueError:  # "default", "local", "broadcast"...
            continue
        if routed.prefixlen and routed.overlaps(wanted):
            overlapping.append(line)
    return overlapping


def _kube_rules() -> list[tuple[str, str, list[str]]]:
    """(iptables binary, table, iptables-save lines) of Kubernetes' own chains and the jumps to them."""
    found = []
    for binary in ("iptables", "ip6tables"):
        if shutil.which(f"{binary}-save") is None:
            continue
        for table in ("filter", "nat", "mangle"):
            lines = _run(f"{binary}-save", "-t", table, check=False).stdout.splitlines()
            kube = [line for line in lines if line.startswith(":KUBE-") or (line.startswith("-A ") and "KUBE-" in line)]
            if kube:
                found.append((binary, table, kube))
    return found


def up() -> None:
    """The bridge with the node's address, the service range routed onto it, and the guard rules."""
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        raise NetworkError(f"link {BRIDGE} exists already: another node runs here, or one was not torn down")
    if _kube_rules():
        raise NetworkError("iptables holds Kubernetes chains (KUBE-*) already: another node runs here")
    for network in (POD_CIDR, SERVICE_CLUSTER_IP_RANGE):
        if overlapping := _routed(network):
            raise NetworkError(f"the host routes {network} already ({'; '.join(overlapping)}): refusing to shadow it")
    prefix = ipaddress.ip_network(POD_CIDR).prefixlen
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{node_ip()}/{prefix}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    _run("ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE)
    for table, chain, rule in GUARD_RULES:
        _run("iptables", "-t", table, "-I", chain, *rule)


def down() -> None:
    """Undoes `up()`, whatever part of it happened: each step runs, and a missing piece is no error."""
    for table, chain, rule in GUARD_RULES:
        while _run("iptables", "-t", table, "-D", chain, *rule, check=False).returncode == 0:
            pass
    # kube-proxy --cleanup removes its chains but not the kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY).
    for binary, table, lines in _kube_rules():
        for line in lines:
            if line.startswith("-A ") and not line.split()[1].startswith("KUBE-"):
                _run(binary, "-t", table, "-D", *shlex.split(line)[1:], check=False)
        chains = [line[1:].split()[0] for line in lines if line.startswith(":")]
        for flag in ("-F", "-X"):
            for chain in chains:
                _run(binary, "-t", table, flag, chain, check=False)
    # The route and the pods' veth ends go with the bridge.
    _run("ip", "link", "del", BRIDGE, check=False)
