"""The real node's configuration keeps it on loopback, inside its own directories and off the host's network."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

from tests.support.controlplane.kwok import kwok_args
from tests.support.controlplane.pki import SERVICE_CLUSTER_IP_RANGE
from tests.support.node.config import (
    BRIDGE,
    NO_REGISTRY,
    POD_CIDR,
    Layout,
    cni_config,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
    node_ip,
    registry_hosts,
)
from tests.support.node.network import GUARD_RULES

LAYOUT = Layout(root=Path("/tmp/node"), run=Path("/run/scaleml-node"))


def test_containerd_keeps_its_state_sockets_and_pods_namespaces_to_itself() -> None:
    config = tomllib.loads(containerd_config(LAYOUT, Path("/bin/runc"), Path("/cni"), "scaleml.dev/pause:1"))
    assert config["version"] == 3
    assert config["imports"] == []
    assert config["root"].startswith("/tmp/node/")
    assert config["state"].startswith("/run/scaleml-node/")
    assert config["grpc"]["address"] == str(LAYOUT.containerd_socket)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]["options"]
    assert (runc["BinaryName"], runc["Root"]) == ("/bin/runc", "/run/scaleml-node/runc")
    assert runtime["cni"] == {"bin_dirs": ["/cni"], "conf_dir": str(LAYOUT.cni_conf_dir)}
    assert config["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == "scaleml.dev/pause:1"
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["registry"]["config_path"] == str(LAYOUT.registry_config)


def test_no_image_is_pulled_from_anywhere_but_a_closed_loopback_port() -> None:
    hosts = tomllib.loads(registry_hosts())
    assert hosts["server"] == NO_REGISTRY
    assert list(hosts["host"]) == [NO_REGISTRY]
    assert NO_REGISTRY.startswith("http://127.0.0.1:")


def test_pods_get_no_default_route_and_no_masquerade() -> None:
    bridge, _ = cni_config(LAYOUT)["plugins"]
    assert bridge["bridge"] == BRIDGE
    assert bridge["ipMasq"] is False
    routes = [ipaddress.ip_network(route["dst"]) for route in bridge["ipam"]["routes"]]
    assert routes == [ipaddress.ip_network(POD_CIDR), ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE)]
    assert all(route.prefixlen > 0 for route in routes)
    assert bridge["ipam"]["dataDir"].startswith("/tmp/node/")


def test_the_node_is_apart_from_kwoks_fake_pod_addresses() -> None:
    fake = next(arg.split("=", 1)[1] for arg in kwok_args(Path("k"), []) if arg.startswith("--cidr="))
    assert not ipaddress.ip_network(POD_CIDR).overlaps(ipaddress.ip_network(fake))
    assert "--manage-all-nodes=false" in kwok_args(Path("k"), [])
    assert ipaddress.ip_address(node_ip()) in ipaddress.ip_network(POD_CIDR)


def test_the_kubelet_and_kube_proxy_listen_on_loopback_or_the_guarded_node_address() -> None:
    kubelet = kubelet_config(LAYOUT, node_ip(), Path("/tmp/node/resolv.conf"), Path("/ca.crt"))
    assert (kubelet["address"], kubelet["healthzBindAddress"], kubelet["readOnlyPort"]) == (node_ip(), "127.0.0.1", 0)
    assert kubelet["resolvConf"] == "/tmp/node/resolv.conf"
    assert kubelet["podLogsDir"].startswith("/tmp/node/")
    proxy = kube_proxy_config(Path("/kubeconfig"))
    assert proxy["bindAddress"] == "127.0.0.1"
    assert proxy["healthzBindAddress"].startswith("127.0.0.1:")
    assert proxy["metricsBindAddress"].startswith("127.0.0.1:")
    assert proxy["nodePortAddresses"] == [f"{node_ip()}/32"]
    assert proxy["iptables"]["localhostNodePorts"] is False


def test_dns_serves_the_cluster_only_on_the_node_address() -> None:
    text = corefile(Path("/kubeconfig"), node_ip())
    assert f"bind {node_ip()}" in text
    assert "forward" not in text


def test_the_guard_drops_what_is_forwarded_beyond_the_bridge() -> None:
    forward = [rule for table, chain, rule in GUARD_RULES if (table, chain) == ("mangle", "FORWARD")]
    assert ("!", "-o", BRIDGE, "-j", "DROP") in forward
    assert ("!", "-i", BRIDGE, "-j", "DROP") in forward
    kubelet = [rule for table, chain, rule in GUARD_RULES if (table, chain) == ("filter", "INPUT")]
    assert kubelet == [("-i", BRIDGE, "-p", "tcp", "--dport", "10250", "-j", "DROP")]
