"""The real node's configuration files, as pure functions of its addresses and directories.

Every setting that differs from a component's default says why: most keep the node on loopback and
inside its own directories (so that a test run leaves the host as it found it), the rest get the
components running in a VM whose kernel lacks what a distribution's node would have (cgroup v1 only,
no CAP_SYS_RESOURCE in the bounding set).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any, Final

from tests.support.controlplane.pki import SERVICE_CLUSTER_IP_RANGE

#: The bridge the pods hang off, and their network: containerd's own default range, apart from the
#: fake pod IPs KWOK hands out (10.244/16); a check at start-up refuses a host that routes it already.
BRIDGE: Final = "scaleml0"
POD_CIDR: Final = "10.88.0.0/24"
CLUSTER_DOMAIN: Final = "cluster.local"
NODE_NAME: Final = "scaleml-real-node"
#: Where pods reach the API server: a relay on the node's address (kube-apiserver binds loopback only).
API_RELAY_PORT: Final = 6443


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one node keeps its state: everything under `root`, the sockets under `run`."""

    root: Path
    run: Path

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def registry_config(self) -> Path:
        return self.root / "registries"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"


def node_ip() -> str:
    """The node's address: the bridge's own, the pods' gateway."""
    return str(next(ipaddress.ip_network(POD_CIDR).hosts()))


def containerd_config(layout: Layout, runc: Path, cni_bin: Path, sandbox_image: str) -> str:
    """containerd's config (version 3): private root, state and sockets, CRI on the built runc and CNI."""

    def q(value: str | Path) -> str:
        return json.dumps(str(value))  # a TOML basic string is a JSON string for these values

    return f"""version = 3
root = {q(layout.root / "containerd")}
state = {q(layout.run / "containerd")}
# Nothing from /etc/containerd: this node is configured here alone.
imports = []
# NRI would open a socket under /var/run/nri; nothing here needs it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = {q(layout.containerd_socket)}

[ttrpc]
  address = {q(str(layout.containerd_socket) + ".ttrpc")}

[plugins."io.containerd.internal.v1.opt"]
  path = {q(layout.root / "opt")}

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    # Imported from a tarball: nothing is ever pulled.
    sandbox = {q(sandbox_image)}
  [plugins."io.containerd.cri.v1.images".registry]
    # Every registry is a dead end here (registry_hosts): an image that was not imported fails at
    # once, and the host never reaches out.
    config_path = {q(layout.registry_config)}

[plugins."io.containerd.cri.v1.runtime"]
  # No AppArmor in this kernel; and without CAP_SYS_RESOURCE even root cannot lower oom_score_adj,
  # which runc would otherwise try for every sandbox.
  disable_apparmor = true
  restrict_oom_score_adj = true
  # The pods' network namespaces under the node's state, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = {q(runc)}
      Root = {q(layout.run / "runc")}
      SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = [{q(cni_bin)}]
    conf_dir = {q(layout.cni_conf_dir)}

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""


#: A port on loopback where nothing listens.
NO_REGISTRY: Final = "http://127.0.0.1:9"


def registry_hosts() -> str:
    """containerd's hosts.toml for every registry (`_default`): pulls go to a closed loopback port."""
    return f"""server = "{NO_REGISTRY}"

[host."{NO_REGISTRY}"]
  capabilities = ["pull", "resolve"]
"""


def cni_config(layout: Layout) -> dict[str, Any]:
    """The pod network: a bridge with the node as gateway, routes to the pod and service ranges only.

    No default route and no masquerade: a pod reaches other pods, Services and the node, nothing
    beyond (a guard rule in the node's forward chain drops what would leave the bridge anyway).
    """
    return {
        "cniVersion": "1.0.0",
        "name": "scaleml",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "hairpinMode": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    # Leases under the node's root, not /var/lib/cni.
                    "dataDir": str(layout.root / "cni" / "ipam"),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": node_ip()}]],
                    "routes": [{"dst": POD_CIDR}, {"dst": SERVICE_CLUSTER_IP_RANGE}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: Layout, cluster_dns: str, resolv_conf: Path, ca_file: Path) -> dict[str, Any]:
    """The kubelet's KubeletConfiguration: loopback only, cgroupfs on cgroup v1, low eviction thresholds."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This VM has cgroup v1 only; kubelet 1.36 refuses it unless told otherwise.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # On the node's address, where the API server reaches it for logs and exec (a guard rule keeps
        # pods off the port); its health endpoint on loopback.
        "address": node_ip(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        # The API server reaches the kubelet (logs, exec) over loopback: anonymous and AlwaysAllow
        # are safe there and spare a serving certificate and a webhook authorizer.
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [cluster_dns],
        # Pods get the cluster's DNS and nothing of the host's resolver.
        "resolvConf": str(resolv_conf),
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(layout.pod_logs),
        "staticPodPath": "",
        "serializeImagePulls": False,
        # Nothing is pulled: images are imported, and garbage collection would delete them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "registerNode": True,
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    """kube-proxy in iptables mode, every address it binds on loopback, node ports on the bridge only."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "clusterCIDR": POD_CIDR,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{node_ip()}/32"],
        # Leave the host's conntrack table size alone.
        "conntrack": {"maxPerCore": 0},
        # No route_localnet: node ports are not served on 127.0.0.1.
        "iptables": {"localhostNodePorts": False},
    }


def corefile(kubeconfig: Path, listen: str) -> str:
    """CoreDNS serving the cluster's names from the API server, and nothing else (no upstream)."""
    return f""".:53 {{
    bind {listen}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
    }}
    cache 5
}}
"""
