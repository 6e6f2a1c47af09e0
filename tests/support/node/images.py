"""Container images for the real node without a registry or Docker.

`busybox_rootfs` and `pause_rootfs` lay out a root file system in a directory; `oci_archive` packs one
into a single-layer OCI image archive that `ctr -n k8s.io images import` loads into containerd's image
store, where the kubelet finds it under its reference.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar"
#: containerd names an imported image by this annotation on the index's manifest descriptor...
IMAGE_NAME_ANNOTATION: Final = "io.containerd.image.name"
#: ...and the OCI layout by this one, the tag.
REF_NAME_ANNOTATION: Final = "org.opencontainers.image.ref.name"

DEFAULT_REGISTRY: Final = "docker.io"
IMAGE_ROOT: Final = PurePosixPath("/")
# platform.machine() names the architecture as the kernel does, OCI as Go does; the rest agree.
_GOARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}

PASSWD: Final = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n"
GROUP: Final = "root:x:0:\napp:x:1000:\ndata:x:2000:\n"
HOSTS: Final = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class _Sha256Writer(io.BufferedWriter):
    """A file being written that hashes what it is given, so that a layer of gigabytes is read once."""

    def __init__(self, fd: int) -> None:
        super().__init__(io.FileIO(fd, "w"))
        self.sha256 = hashlib.sha256()

    def write(self, buffer: ReadableBuffer, /) -> int:
        written = super().write(buffer)
        self.sha256.update(buffer)
        return written


def normalise_reference(reference: str) -> str:
    """The reference as containerd stores it: `busybox` is `docker.io/library/busybox:latest`."""
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DEFAULT_REGISTRY, reference
        if "/" not in path:
            path = f"library/{path}"
    last = path.rpartition("/")[2]
    if ":" not in last and "@" not in last:
        path = f"{path}:latest"
    return f"{registry}/{path}"


def oci_archive(
    rootfs: Path,
    reference: str,
    archive: Path | IO[bytes],
    *,
    scratch: Path | None = None,
    entrypoint: Sequence[str] = (),
    env: Sequence[str] = (DEFAULT_PATH,),
    user: str = "",
    workdir: str = "/",
    overlays: Sequence[Path] = (),
    host_trees: Sequence[tuple[Path, PurePosixPath]] = (),
) -> None:
    """Packs `rootfs` into an OCI image archive naming the image `reference`, in the file or the stream `archive`.

    The one layer is an uncompressed tar of `rootfs` (modes, owners, links; no device nodes): its digest
    is its diff_id. It is written to a file in `scratch` (default: beside `archive`) and hashed as it
    goes, so the rootfs is never held in memory; a stream (`ctr images import -`) spares the archive's
    second copy of it. `overlays` are more root file systems, added over `rootfs`. `host_trees` are
    directories of this machine, each added at the path in the image it is paired with, whose
    parents are made traversable for any user.
    """
    name = normalise_reference(reference)
    last = name.rpartition("/")[2]
    if "@" in last:
        raise ValueError(f"{reference}: an archive's image is named by a tag, its digest being the archive's own")
    tag = last.rpartition(":")[2]
    if scratch is None:
        if not isinstance(archive, Path):
            raise ValueError("an archive written to a stream needs a scratch directory for its layer")
        scratch = archive.parent
    scratch.mkdir(parents=True, exist_ok=True)
    # Not /tmp by default: the layer is as large as the rootfs.
    fd, layer_path = tempfile.mkstemp(prefix=".oci-", suffix=".layer", dir=scratch)
    try:
        with _Sha256Writer(fd) as layer_file:
            with tarfile.open(fileobj=layer_file, mode="w", format=tarfile.PAX_FORMAT) as layer:
                for tree in (rootfs, *overlays):
                    _add_tree(layer, tree)
                for tree, at in host_trees:
                    _add_parents(layer, at)
                    _add_tree(layer, tree, at)
            layer_size = layer_file.tell()
            layer_digest = f"sha256:{layer_file.sha256.hexdigest()}"
        config = _json(
            {
                "architecture": _GOARCH.get(platform.machine(), platform.machine()),
                "os": "linux",
                "config": {"Entrypoint": list(entrypoint), "Env": list(env), "User": user, "WorkingDir": workdir},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        )
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": _descriptor(CONFIG_MEDIA_TYPE, config),
                "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_size}],
            }
        )
        index = _json(
            {
                "schemaVersion": 2,
                "mediaType": INDEX_MEDIA_TYPE,
                "manifests": [
                    {
                        **_descriptor(MANIFEST_MEDIA_TYPE, manifest),
                        "annotations": {IMAGE_NAME_ANNOTATION: name, REF_NAME_ANNOTATION: tag},
                    }
                ],
            }
        )
        target = {"name": archive} if isinstance(archive, Path) else {"fileobj": archive}
        # "w|": a stream need not be seekable.
        with tarfile.open(mode="w|", format=tarfile.PAX_FORMAT, **target) as outer:
            _add_bytes(outer, "oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
            _add_bytes(outer, "index.json", index)
            _add_bytes(outer, _blob(config), config)
            _add_bytes(outer, _blob(manifest), manifest)
            info = outer.gettarinfo(layer_path, arcname=f"blobs/sha256/{layer_digest.removeprefix('sha256:')}")
            info.mode, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, "", ""
            with open(layer_path, "rb") as layer_blob:
                outer.addfile(info, layer_blob)
    finally:
        os.unlink(layer_path)


def busybox_rootfs(directory: Path, busybox: Path = Path("/bin/busybox")) -> Path:
    """A root file system in `directory`: a static busybox with a link per applet in /bin, root, and
    a user `app` (uid and gid 1000) with a group `data` (gid 2000); returns `directory`, made anew."""
    shutil.rmtree(directory, ignore_errors=True)
    bin_dir = directory / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, bin_dir / "busybox")
    (bin_dir / "busybox").chmod(0o755)
    applets = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")
    etc = directory / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (etc / "hosts").write_text(HOSTS)
    (etc / "resolv.conf").write_text("")
    (directory / "root").mkdir(mode=0o700, exist_ok=True)
    tmp = directory / "tmp"
    tmp.mkdir(exist_ok=True)
    # mkdir's mode passes through the umask.
    tmp.chmod(0o1777)
    return directory


def pause_rootfs(directory: Path, pause: Path) -> Path:
    """A root file system in `directory` holding only `/pause` (the image's entrypoint); returns `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pause, directory / "pause")
    (directory / "pause").chmod(0o755)
    return directory


def _walk(directory: Path) -> Iterator[Path]:
    # Sorted, and each directory before its contents, as a layer is unpacked in order.
    with os.scandir(directory) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        yield Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))


def _add_parents(layer: tarfile.TarFile, at: PurePosixPath) -> None:
    """The directories down to `at`, and `at` itself: a user other than root must reach it."""
    for parent in [*reversed(at.parents[:-1]), at]:
        info = tarfile.TarInfo(parent.relative_to("/").as_posix())
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        layer.addfile(info)


def _add_tree(layer: tarfile.TarFile, tree: Path, at: PurePosixPath = IMAGE_ROOT) -> None:
    """Adds what is under `tree`, named as the image has it: under `at` (default: its root)."""
    tree = tree.absolute()
    for path in _walk(tree):
        # gettarinfo keeps the mode, owner and link target, and turns a second name of a file already
        # added into a hard link; it gives sockets no entry.
        name = (at / path.relative_to(tree).as_posix()).relative_to("/").as_posix()
        info = layer.gettarinfo(path, arcname=name)
        if info is None or info.ischr() or info.isblk():
            continue
        # The host's names for the owners mean nothing in the image: only the numbers count.
        info.uname = info.gname = ""
        if info.isreg():
            with path.open("rb") as file:
                layer.addfile(info, file)
        else:
            layer.addfile(info)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _descriptor(media_type: str, content: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{hashlib.sha256(content).hexdigest()}", "size": len(content)}


def _blob(content: bytes) -> str:
    return f"blobs/sha256/{hashlib.sha256(content).hexdigest()}"


def _add_bytes(outer: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(content), 0o644
    outer.addfile(info, io.BytesIO(content))
