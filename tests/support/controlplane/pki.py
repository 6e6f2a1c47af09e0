"""The control plane's certificates and kubeconfigs.

One CA signs the apiserver's serving certificate, the admin's client certificate and the front
proxy's client certificate; a separate key pair signs service-account tokens. Kubeconfigs point
at the apiserver with that CA and authenticate with a client certificate or a bearer token.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICE_CLUSTER_IP_RANGE: Final = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER: Final = "scaleml-admin"
FRONT_PROXY_CLIENT: Final = "front-proxy-client"


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

    def issued(subject: x509.Name, key: rsa.RSAPrivateKey, *, ca: bool) -> x509.CertificateBuilder:
        """What the CA and the leaves share: issued by the CA, a fresh serial, the validity, constraints, usage, SKI."""
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )

    ca_cert = issued(ca_name, ca_key, ca=True).sign(ca_key, hashes.SHA256())

    def leaf(
        subject: x509.Name, usage: x509.ObjectIdentifier, sans: Sequence[x509.GeneralName] = ()
    ) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
        key = _new_key()
        builder = (
            issued(subject, key, ca=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
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


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(path: Path, server: str | None, ca_cert: Path, user: str, credentials: Mapping[str, str]) -> Path:
    """A kubeconfig for ``server`` (trusting ``ca_cert``) as ``user`` with ``credentials``, for its owner only."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "scaleml-test",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": b64(ca_cert.read_bytes()),
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
