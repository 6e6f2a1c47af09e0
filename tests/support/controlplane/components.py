"""The command line of each control-plane component: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Every component binds 127.0.0.1 only. (KWOK's is in `kwok`, with the rest of KWOK.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.controlplane.pki import FRONT_PROXY_CLIENT, SERVICE_ACCOUNT_ISSUER, SERVICE_CLUSTER_IP_RANGE, Pki


def etcd_args(data_dir: Path, client_url: str, peer_url: str) -> list[str]:
    return [
        "--name=scaleml",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=scaleml={peer_url}",
        "--unsafe-no-fsync=true",
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    ]


def apiserver_args(etcd_url: str, port: int, workdir: Path, pki: Pki) -> list[str]:
    return [
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        # The "kubernetes" Service's Endpoints may not hold a loopback address (Endpoints
        # validation rejects it), so advertise 127.0.0.1 but don't reconcile those endpoints.
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        # A real node (tests/node) is reached for logs and exec at its address; its name resolves nowhere.
        "--kubelet-preferred-address-types=InternalIP",
        f"--cert-dir={workdir / 'pki'}",
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
    ]


def controller_manager_args(kubeconfig: Path, port: int, workdir: Path, pki: Pki) -> list[str]:
    return [
        *_component_kubeconfig_args(kubeconfig),
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'kube-controller-manager'}",
        "--leader-elect=false",
        "--controllers=*",
        # Each controller acts as its own ServiceAccount in kube-system, as kubeadm sets it up: admission
        # then sees which controller makes a pod (manifests/components/pod-service-accounts).
        "--use-service-account-credentials=true",
        # Token controller (ServiceAccount token Secrets, kube-root-ca.crt ConfigMaps).
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}",
        # CSR signing, so that CertificateSigningRequests can be approved and signed too.
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "leaderElection": {"leaderElect": False},
    }


def scheduler_args(config: Path, kubeconfig: Path, port: int, workdir: Path) -> list[str]:
    return [
        f"--config={config}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'kube-scheduler'}",
        "--v=1",
    ]


def _component_kubeconfig_args(kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
    ]
