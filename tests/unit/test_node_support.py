"""The real node's helpers that need no node: host snapshots and their differences, and OCI image archives."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import platform
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from tests.support.node import host, images

BUSYBOX = Path("/bin/busybox")

BEFORE = host.HostState(
    sysctls={"net.ipv4.ip_forward": "0", "kernel.panic": "0"},
    routes=("default via 192.0.2.1 dev eth0",),
    links=("eth0", "lo"),
    iptables=("*filter", ":FORWARD ACCEPT", "COMMIT"),
    mounts=("/run/user/0",),
    netns=(),
    cgroups=(),
)


def test_equal_states_have_no_differences() -> None:
    assert host.differences(BEFORE, dataclasses.replace(BEFORE)) == []


def test_every_kind_of_change_is_named() -> None:
    after = host.HostState(
        sysctls={"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"},
        routes=("10.244.0.0/24 dev scaleml0 proto kernel scope link src 10.244.0.1",),
        links=("eth0", "lo", "scaleml0"),
        iptables=(
            "*filter",
            ":FORWARD ACCEPT",
            "-A FORWARD -s 10.244.0.0/24 -j ACCEPT",
            "COMMIT",
            "*nat",
            ":POSTROUTING ACCEPT",
            ":KUBE-SERVICES -",
            "-A POSTROUTING -s 10.244.0.0/24 -j MASQUERADE",
            "COMMIT",
        ),
        mounts=("/run/user/0", "/run/user/0", "/tmp/node/kubelet/pods/x/volumes"),
        netns=("cni-1234",),
        cgroups=("/sys/fs/cgroup/memory/kubepods",),
    )
    assert sorted(host.differences(BEFORE, after)) == sorted(
        [
            "sysctl net.ipv4.ip_forward: 0 -> 1",
            "sysctl kernel.panic: 0 -> absent",
            "sysctl net.bridge.bridge-nf-call-iptables: absent -> 1",
            "route added: 10.244.0.0/24 dev scaleml0 proto kernel scope link src 10.244.0.1",
            "route removed: default via 192.0.2.1 dev eth0",
            "link added: scaleml0",
            "iptables rule added: -A FORWARD -s 10.244.0.0/24 -j ACCEPT",
            "iptables rule added: -t nat :KUBE-SERVICES -",
            "iptables rule added: -t nat -A POSTROUTING -s 10.244.0.0/24 -j MASQUERADE",
            # A second mount stacked on a point already mounted.
            "mount added: /run/user/0",
            "mount added: /tmp/node/kubelet/pods/x/volumes",
            "netns added: cni-1234",
            "cgroup added: /sys/fs/cgroup/memory/kubepods",
        ]
    )


def test_the_same_rule_in_another_table_is_a_change() -> None:
    rule = "-A FORWARD -j DROP"
    filtered = dataclasses.replace(BEFORE, iptables=("*filter", rule, "COMMIT"))
    mangled = dataclasses.replace(BEFORE, iptables=("*mangle", rule, "COMMIT"))
    assert host.differences(filtered, mangled) == [
        "iptables rule added: -t mangle -A FORWARD -j DROP",
        "iptables rule removed: -A FORWARD -j DROP",
    ]


def test_a_table_listed_with_empty_accepting_chains_is_no_change() -> None:
    # iptables-save lists a table once anything touched it, though it holds nothing.
    listed = dataclasses.replace(BEFORE, iptables=(*BEFORE.iptables, "*nat", ":PREROUTING ACCEPT", "COMMIT"))
    assert host.differences(BEFORE, listed) == []
    dropping = dataclasses.replace(BEFORE, iptables=("*filter", ":FORWARD DROP", "COMMIT"))
    assert host.differences(BEFORE, dropping) == ["iptables rule added: :FORWARD DROP"]


@pytest.mark.parametrize(
    ("reference", "normalised"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("scaleml/test:1", "docker.io/scaleml/test:1"),
        ("docker.io/scaleml/test:1", "docker.io/scaleml/test:1"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("localhost/scaleml/test", "localhost/scaleml/test:latest"),
        ("localhost:5000/test:2", "localhost:5000/test:2"),
        ("scaleml/test@sha256:" + "0" * 64, "docker.io/scaleml/test@sha256:" + "0" * 64),
    ],
)
def test_a_reference_is_normalised_as_containerd_stores_it(reference: str, normalised: str) -> None:
    assert images.normalise_reference(reference) == normalised


def _tiny_rootfs(rootfs: Path) -> Path:
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (rootfs / "bin" / "hello").chmod(0o755)
    (rootfs / "bin" / "hi").symlink_to("hello")
    (rootfs / "etc" / "greeting").write_text("hello\n")
    (rootfs / "etc" / "greeting").chmod(0o640)
    (rootfs / "etc" / "greeting-again").hardlink_to(rootfs / "etc" / "greeting")
    return rootfs


def _blob(outer: tarfile.TarFile, descriptor: dict[str, Any]) -> bytes:
    """A blob named by its descriptor, once its digest and size are checked against its content."""
    algorithm, _, digest = descriptor["digest"].partition(":")
    assert algorithm == "sha256"
    file = outer.extractfile(f"blobs/sha256/{digest}")
    assert file is not None
    content = file.read()
    assert hashlib.sha256(content).hexdigest() == digest
    assert len(content) == descriptor["size"]
    return content


def _layer_members(outer: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    index_file = outer.extractfile("index.json")
    assert index_file is not None
    [descriptor] = json.load(index_file)["manifests"]
    [layer_descriptor] = json.loads(_blob(outer, descriptor))["layers"]
    with tarfile.open(fileobj=io.BytesIO(_blob(outer, layer_descriptor))) as layer:
        return {member.name: member for member in layer.getmembers()}


def test_a_host_tree_goes_in_where_the_image_wants_it_and_the_archive_can_be_a_stream(tmp_path: Path) -> None:
    rootfs = _tiny_rootfs(tmp_path / "rootfs")
    venv = tmp_path / "machine" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\n")
    venv.parent.chmod(0o700)
    scratch = tmp_path / "scratch"
    stream = io.BytesIO()
    at = PurePosixPath("/opt/env/venv")
    images.oci_archive(rootfs, "scaleml/test:1", stream, scratch=scratch, host_trees=[(venv, at)])
    assert list(scratch.iterdir()) == []  # the layer's file is gone

    stream.seek(0)
    with tarfile.open(fileobj=stream) as outer:
        members = _layer_members(outer)
    assert "opt/env/venv/bin/python" in members
    assert "bin/hello" in members
    assert not any(name.startswith(venv.relative_to("/").as_posix()) for name in members)
    # Every directory down to the tree is there, open to the pods' user whatever it is on this machine.
    for directory in ["opt", "opt/env", "opt/env/venv"]:
        member = members[directory]
        assert member.isdir()
        assert member.mode == 0o755


def test_an_archive_is_a_consistent_oci_layout(tmp_path: Path) -> None:
    rootfs = _tiny_rootfs(tmp_path / "rootfs")
    archive = tmp_path / "out" / "test.tar"
    images.oci_archive(rootfs, "scaleml/test:1", archive, entrypoint=["/bin/hello"], user="1000")
    # The layer's temporary file is gone.
    assert [path.name for path in archive.parent.iterdir()] == ["test.tar"]

    with tarfile.open(archive) as outer:
        layout = outer.extractfile("oci-layout")
        index_file = outer.extractfile("index.json")
        assert layout is not None
        assert index_file is not None
        assert json.load(layout) == {"imageLayoutVersion": "1.0.0"}
        index = json.load(index_file)
        [descriptor] = index["manifests"]
        assert descriptor["mediaType"] == images.MANIFEST_MEDIA_TYPE
        assert descriptor["annotations"] == {
            "io.containerd.image.name": "docker.io/scaleml/test:1",
            "org.opencontainers.image.ref.name": "1",
        }
        manifest = json.loads(_blob(outer, descriptor))
        config = json.loads(_blob(outer, manifest["config"]))
        [layer_descriptor] = manifest["layers"]
        assert layer_descriptor["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
        layer = _blob(outer, layer_descriptor)

    # Uncompressed, the layer's digest is its diff_id.
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer_descriptor["digest"]]}
    assert config["os"] == "linux"
    assert config["architecture"] == {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    assert config["config"] == {
        "Entrypoint": ["/bin/hello"],
        "Env": [images.DEFAULT_PATH],
        "User": "1000",
        "WorkingDir": "/",
    }
    (layer_path := tmp_path / "layer.tar").write_bytes(layer)
    with tarfile.open(layer_path) as layer_tar:
        members = {member.name: member for member in layer_tar.getmembers()}
    assert sorted(members) == ["bin", "bin/hello", "bin/hi", "etc", "etc/greeting", "etc/greeting-again"]
    assert members["bin/hello"].isreg()
    assert members["bin/hello"].mode == 0o755
    assert members["etc/greeting"].mode == 0o640
    assert members["bin/hi"].issym()
    assert members["bin/hi"].linkname == "hello"
    assert members["etc/greeting-again"].islnk()
    assert members["etc/greeting-again"].linkname == "etc/greeting"
    # Owners are the rootfs's own, by number only.
    assert {(member.uid, member.gid) for member in members.values()} == {(os.getuid(), os.getgid())}
    assert {(member.uname, member.gname) for member in members.values()} == {("", "")}


def test_an_archive_refuses_a_reference_by_digest(tmp_path: Path) -> None:
    rootfs = _tiny_rootfs(tmp_path / "rootfs")
    with pytest.raises(ValueError, match="named by a tag"):
        images.oci_archive(rootfs, "scaleml/test@sha256:" + "0" * 64, tmp_path / "test.tar")


def test_a_busybox_rootfs_has_its_applets_and_users(tmp_path: Path) -> None:
    if not BUSYBOX.is_file():
        pytest.skip(f"{BUSYBOX} is missing: Debian's busybox-static package installs it")
    rootfs = images.busybox_rootfs(tmp_path / "rootfs", BUSYBOX)
    assert (rootfs / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    assert (rootfs / "bin" / "busybox").stat().st_mode & 0o777 == 0o755
    for applet in ("sh", "ls", "wget", "nslookup"):
        assert os.readlink(rootfs / "bin" / applet) == "busybox"
    passwd = (rootfs / "etc" / "passwd").read_text().splitlines()
    assert [line.split(":")[:4] for line in passwd] == [["root", "x", "0", "0"], ["app", "x", "1000", "1000"]]
    groups = [line.split(":")[:3] for line in (rootfs / "etc" / "group").read_text().splitlines()]
    assert ["app", "x", "1000"] in groups
    assert ["data", "x", "2000"] in groups
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (rootfs / "etc" / "resolv.conf").read_text() == ""


def test_a_pause_rootfs_holds_only_pause(tmp_path: Path) -> None:
    pause = tmp_path / "pause-binary"
    pause.write_bytes(b"\x7fELF")
    rootfs = images.pause_rootfs(tmp_path / "rootfs", pause)
    assert [path.name for path in rootfs.iterdir()] == ["pause"]
    assert (rootfs / "pause").read_bytes() == b"\x7fELF"
    assert (rootfs / "pause").stat().st_mode & 0o777 == 0o755


def test_a_snapshot_reads_this_host() -> None:
    if not host.PROC_SYS.is_dir():
        pytest.skip("/proc/sys is missing: not a Linux host")
    if os.geteuid() != 0:
        pytest.skip("iptables-save needs root")
    state = host.snapshot()
    assert state.sysctls["net.ipv4.ip_forward"] in {"0", "1"}
    assert set(state.sysctls) <= set(host.SYSCTLS)
    assert "lo" in state.links
    assert host.differences(state, state) == []


def test_a_sysctl_is_read_by_its_dotted_key() -> None:
    if not host.PROC_SYS.is_dir():
        pytest.skip("/proc/sys is missing: not a Linux host")
    assert host.read_sysctl("kernel.ostype") == "Linux"
    assert host.read_sysctl("net.ipv4.no_such_key") is None
