"""Locating the control-plane binaries, and which of them each tier needs.

Each binary is taken from ``$KUBEBUILDER_ASSETS`` when that variable is set and the directory
holds it (setup-envtest ships etcd, kube-apiserver and kubectl only), otherwise from
``$SCALEML_CONTROL_PLANE_DIR/bin`` (default ``~/.cache/scaleml/control-plane/k8s-v1.36.3``, built
by ``make control-plane``). KWOK's default stages are read from
``$SCALEML_CONTROL_PLANE_DIR/kwok-stages.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from tests.support.controlplane.processes import ControlPlaneError

KUBERNETES_VERSION: Final = "v1.36.3"
DEFAULT_CONTROL_PLANE_DIR: Final = Path("~/.cache/scaleml/control-plane") / f"k8s-{KUBERNETES_VERSION}"

#: Binaries (and the KWOK stages file) needed by each tier.
API_TIER: Final = ("etcd", "kube-apiserver")
NODES_TIER: Final = (*API_TIER, "kube-controller-manager", "kube-scheduler", "kwok", "kwok-stages.yaml")


class MissingBinariesError(ControlPlaneError):
    """Some control-plane binaries are not installed."""

    def __init__(self, missing: Sequence[str], searched: Sequence[Path]) -> None:
        self.missing = tuple(missing)
        self.searched = tuple(searched)
        where = ", ".join(str(p) for p in searched)
        super().__init__(
            f"control-plane binaries not found: {', '.join(self.missing)} (searched: {where}); "
            "`make control-plane` builds them into $SCALEML_CONTROL_PLANE_DIR "
            f"(default {DEFAULT_CONTROL_PLANE_DIR})"
        )


@dataclasses.dataclass(frozen=True)
class Binaries:
    """Where each control-plane binary lives; ``None`` when it was not found."""

    etcd: Path | None
    kube_apiserver: Path | None
    kube_controller_manager: Path | None
    kube_scheduler: Path | None
    kwok: Path | None
    kwok_stages: Path | None
    searched: tuple[Path, ...] = ()

    def _by_name(self) -> dict[str, Path | None]:
        return {
            "etcd": self.etcd,
            "kube-apiserver": self.kube_apiserver,
            "kube-controller-manager": self.kube_controller_manager,
            "kube-scheduler": self.kube_scheduler,
            "kwok": self.kwok,
            "kwok-stages.yaml": self.kwok_stages,
        }

    def missing(self, tier: Iterable[str] = NODES_TIER) -> list[str]:
        """Names (as in :data:`API_TIER` / :data:`NODES_TIER`) of the files the tier needs but lacks."""
        found = self._by_name()
        return [name for name in tier if found[name] is None]

    def require(self, tier: Iterable[str] = NODES_TIER) -> None:
        """Raise :class:`MissingBinariesError` unless everything the tier needs is present."""
        missing = self.missing(tier)
        if missing:
            raise MissingBinariesError(missing, self.searched)

    def path(self, name: str) -> Path:
        """The path of one file by name, or :class:`MissingBinariesError`."""
        found = self._by_name()[name]
        if found is None:
            raise MissingBinariesError([name], self.searched)
        return found


def control_plane_dir() -> Path:
    """``$SCALEML_CONTROL_PLANE_DIR``, or the default cache directory."""
    raw = os.environ.get("SCALEML_CONTROL_PLANE_DIR") or str(DEFAULT_CONTROL_PLANE_DIR)
    return Path(raw).expanduser()


def find_binaries() -> Binaries:
    """Locate the binaries: per binary ``$KUBEBUILDER_ASSETS``, then ``$SCALEML_CONTROL_PLANE_DIR/bin``."""
    base = control_plane_dir()
    dirs: list[Path] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        dirs.append(Path(assets).expanduser())
    dirs.append(base / "bin")

    def executable(name: str) -> Path | None:
        for directory in dirs:
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
        return None

    stages = base / "kwok-stages.yaml"
    return Binaries(
        etcd=executable("etcd"),
        kube_apiserver=executable("kube-apiserver"),
        kube_controller_manager=executable("kube-controller-manager"),
        kube_scheduler=executable("kube-scheduler"),
        kwok=executable("kwok"),
        kwok_stages=stages if stages.is_file() else None,
        searched=(*dirs, stages),
    )
