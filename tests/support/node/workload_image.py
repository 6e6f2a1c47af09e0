"""The workload image for the real node, built from this checkout without a registry or Docker.

A Debian bookworm root file system (debootstrap's minbase and the libraries Python's extension
modules link against), plus this machine's Python environment: the interpreter at the path it was
built at, the virtual environment `make venv` made (PyTorch included: nothing is downloaded a
second time) at /opt/scaleml/venv, and the project's packages in that environment's site-packages. The rendered
pods run `python` and `torchrun` from PATH, as in the production image (workloads.Dockerfile), and
as the uid their security context gives them.

The same image stands in for Triton's (the operator's default `tritonImage`): the `nvidia-pytriton`
wheel in the environment ships a `tritonserver` with the python backend, which `/usr/local/bin/
tritonserver` runs with the wheel's libraries on the loader path and the python backend where the
server looks, as the NGC image has them.

The base is cached under the node's directory; the image itself is packed at each start (about a
minute for 8 GB), so it always holds the code under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path, PurePosixPath
from typing import IO, Final

from scaleml_operator.builders.modeldeployment import TRITON_BACKENDS
from scaleml_operator.config import DEFAULT_TRITON_IMAGE, DEFAULT_WORKLOAD_IMAGE
from scaleml_workloads.serving import tritonserver
from tests.support.manifests import ROOT
from tests.support.node.images import normalise_reference, oci_archive
from tests.support.node.node import RealNode, node_dir

SUITE: Final = "bookworm"
MIRROR: Final = "http://deb.debian.org/debian"
#: Beyond minbase: what the interpreter's extension modules and the wheels' bundled libraries load.
PACKAGES: Final = ("libssl3", "libffi8", "libsqlite3-0", "libncursesw6", "libreadline8", "libgomp1", "libquadmath0")
#: The project's packages, as the editable install finds them (pyproject.toml's package-dir).
SOURCES: Final = ("api", "operator", "workloads", "local")
#: The virtual environment in the image.
VENV: Final = PurePosixPath("/opt/scaleml/venv")


class ImageError(RuntimeError):
    pass


def debian_rootfs(directory: Path) -> Path:
    """debootstrap's minbase of bookworm in `directory` (once: a complete one is kept and reused)."""
    done = directory / ".scaleml-complete"
    if done.exists():
        return directory
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageError("debootstrap is missing (`make node` installs it)")
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    command = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(directory), MIRROR]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"debootstrap failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")
    # Nothing in the image runs apt: its lists and caches are dead weight.
    for cache in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(directory / cache, ignore_errors=True)
    # The interpreter may live under /root (pyenv): the pods' user must be able to reach it.
    (directory / "root").chmod(0o755)
    done.touch()
    return directory


def _site_packages() -> PurePosixPath:
    """Where the virtual environment's packages are, relative to it (`lib/python3.11/site-packages`)."""
    return PurePosixPath(Path(sysconfig.get_paths()["purelib"]).relative_to(sys.prefix).as_posix())


def in_image(path: Path) -> PurePosixPath:
    """Where a file of the virtual environment is in the image."""
    return VENV / Path(path).relative_to(sys.prefix).as_posix()


def environment_trees() -> list[tuple[Path, PurePosixPath]]:
    """This machine's Python environment, and where each part goes in the image.

    The interpreter's installation stays at its own path, which the virtual environment names. The
    environment itself goes to VENV, wherever the checkout is (a pod mounts its scratch volume on
    /tmp, say), and the project's packages into its site-packages: the editable install's paths do
    not exist in the image, and Python finds them there instead.
    """
    interpreter = Path(sys.base_prefix).resolve()
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        raise ImageError("not running in a virtual environment: the workload image copies `make venv`'s")
    packages = [package for source in SOURCES for package in (ROOT / source).glob("scaleml_*") if package.is_dir()]
    return [
        (interpreter, PurePosixPath(interpreter.as_posix())),
        (venv, VENV),
        *((package, VENV / _site_packages() / package.name) for package in packages),
    ]


def triton_rootfs(directory: Path) -> Path:
    """`/usr/local/bin/tritonserver` and the python backend, staged in `directory` for the image."""
    staged = tritonserver.backend_directory(directory / "opt" / "tritonserver")
    # Where the NGC image has them, and where the pods' Triton takes its copy from (TRITON_BACKENDS).
    backends = directory / TRITON_BACKENDS.lstrip("/")
    shutil.rmtree(backends, ignore_errors=True)
    staged.rename(backends)
    # The wheel's bundled libraries, and the interpreter's libpython, which the python backend's stub
    # embeds (on a distribution's Python it would come from the system's library path).
    bundled = in_image(Path(tritonserver.environment(threads=None)["LD_LIBRARY_PATH"].split(os.pathsep)[0]))
    libraries = os.pathsep.join([str(bundled), str(sysconfig.get_config_var("LIBDIR"))])
    wrapper = directory / "usr" / "local" / "bin" / "tritonserver"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(
        "#!/bin/sh\n"
        "# The nvidia-pytriton wheel's server in place of the NGC image's, with its bundled libraries.\n"
        f'export LD_LIBRARY_PATH="{libraries}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
        f'exec "{in_image(tritonserver.binary())}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return directory


def workload_archive(base: Path, reference: str, out: IO[bytes], scratch: Path) -> None:
    """Writes the workload image, named `reference`, as an OCI archive to `out` (its layer in `scratch`)."""
    env = [
        f"PATH={VENV / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONUNBUFFERED=1",
        "PYTHONDONTWRITEBYTECODE=1",
        # The pods' user has no home in the image; libraries that cache (matplotlib, torch) go to /tmp.
        "HOME=/tmp",
    ]
    oci_archive(
        debian_rootfs(base),
        reference,
        out,
        scratch=scratch,
        env=env,
        overlays=[triton_rootfs(scratch / "triton-rootfs")],
        host_trees=environment_trees(),
    )


def debian_base() -> Path:
    """Where the Debian base is cached: beside the node's binaries."""
    return node_dir() / "images" / "debian-bookworm"


def import_workload_images(node: RealNode) -> str:
    """Builds the operator's default workload image from this checkout into `node`, also tagged as its
    default Triton image (this image's tritonserver is the nvidia-pytriton wheel's); its reference."""
    node.import_image(lambda out: workload_archive(debian_base(), DEFAULT_WORKLOAD_IMAGE, out, node.workdir))
    # Under the operator's default tritonImage, a ModelDeployment's pods find it.
    tagged = node.ctr(
        "images",
        "tag",
        "--force",
        normalise_reference(DEFAULT_WORKLOAD_IMAGE),
        normalise_reference(DEFAULT_TRITON_IMAGE),
    )
    if tagged.returncode != 0:
        raise ImageError(f"could not tag the workload image as Triton's: {tagged.stderr}")
    return DEFAULT_WORKLOAD_IMAGE


if __name__ == "__main__":
    # `make node-images`: the Debian base, fetched from the mirror once, so that no test downloads it.
    print(debian_rootfs(debian_base()))
