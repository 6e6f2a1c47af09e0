"""The state directory of local mode: the applied objects, their status, the volumes and the logs.

    objects/<plural>/<name>.yaml   what `scaleml local apply` accepted (with a uid and a creation time)
    status/<plural>/<name>.json    the status the supervisor writes (phase, versions, retraining)
    status/<plural>/<name>.workload.json   the status the workload writes (progress, drift results)
    volumes/<claim>/               one folder per PersistentVolumeClaim
    supervisor.pid, supervisor.log, processes.json, logs/, run/

Two status files, one writer each: a read-merge-write from two processes could lose an update.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import TypeAdapter, ValidationError

from scaleml_api.base import API_VERSION, ObjectName
from scaleml_api.crdgen import openapi_schema
from scaleml_api.kind import AnyKind
from scaleml_api.v1alpha1 import KINDS
from scaleml_api.validation import admitted, defaulted, parse_spec
from scaleml_local import kubectl_yaml
from scaleml_operator.status import conditions
from scaleml_workloads.kubeapi import StatusFile

DEFAULT_NAMESPACE: Final = "default"
PID_FILE: Final = "supervisor.pid"
PROCESSES_FILE: Final = "processes.json"

Manifest = dict[str, Any]
# The fields of a custom resource; status is ignored on apply, as the status subresource has it.
_OBJECT_FIELDS: Final = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
# A claim's name is its folder's under volumes/: a DNS subdomain, as the API server requires, has no
# "/" and no "..", so no claim can name a folder elsewhere.
_CLAIM_NAME: Final = TypeAdapter(ObjectName)


def running(pid: int) -> bool:
    """Whether `pid` runs: a killed process whose parent has not reaped it yet (a zombie) does not.

    A detached supervisor's parent is init, and not every init reaps (a container's often does not).
    """
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Either it exited just now, or there is no /proc (not Linux) and the signal check has to do.
        return not Path("/proc/self").exists()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class LocalError(Exception):
    """What the user asked for cannot be done; the message says why."""


def kind_named(name: str) -> AnyKind:
    """The kind by kind name, plural, singular or short name, as kubectl accepts them."""
    for kind in KINDS:
        if name.lower() in (kind.kind.lower(), kind.plural, kind.singular, kind.short_name):
            return kind
    raise LocalError(f'unknown kind "{name}": one of {", ".join(k.kind for k in KINDS)}')


def timestamp(moment: datetime | None = None) -> str:
    return conditions.timestamp(moment or datetime.now(UTC))


def _objects(document: Any) -> list[Manifest]:
    """The objects of one document: a List's items (as kubectl applies them), or the document itself."""
    if not isinstance(document, dict):
        raise LocalError(f"a document must be an object with apiVersion and kind, not {document!r}")
    items = document.get("items")
    if str(document.get("kind", "")).endswith("List") and isinstance(items, list):
        return [object for item in items for object in _objects(item)]
    return [document]


def read_manifests(paths: Iterable[Traversable]) -> list[Manifest]:
    """Every object in the files given, read as kubectl reads them (directories non-recursively).

    A path is a file or directory on disk, or inside an installed package (`importlib.resources`).
    """
    documents: list[Manifest] = []
    for path in paths:
        files = [path]
        if path.is_dir():
            files = sorted(
                (f for f in path.iterdir() if f.name.endswith((".yaml", ".yml", ".json"))), key=lambda f: f.name
            )
        if not files:
            raise LocalError(f"{path} holds no YAML file")
        for file in files:
            try:
                loaded = kubectl_yaml.load_all(file.read_text())
            except (OSError, yaml.YAMLError, kubectl_yaml.ConversionError) as error:
                raise LocalError(f"cannot read {file}: {error}") from error
            documents.extend(object for document in loaded for object in _objects(document))
    return documents


def _check_claim_name(claim: str) -> None:
    try:
        _CLAIM_NAME.validate_python(claim)
    except ValidationError:
        raise LocalError(
            f"persistentvolumeclaim/{claim} is invalid: metadata.name must be a lowercase RFC 1123 subdomain "
            "(lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"
        ) from None


class State:
    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def volume(self, claim: str) -> Path:
        _check_claim_name(claim)
        return self.directory("volumes", claim)

    def _object_path(self, kind: AnyKind, name: str) -> Path:
        return self.root / "objects" / kind.plural / f"{name}.yaml"

    def status_file(self, kind: AnyKind, name: str) -> StatusFile:
        """The supervisor's part of the status."""
        return StatusFile(self.root / "status" / kind.plural / f"{name}.json")

    def workload_status_file(self, kind: AnyKind, name: str) -> StatusFile:
        """The workload's part of the status (TrainingRun.statusFile, MonitorRun.statusFile)."""
        return StatusFile(self.root / "status" / kind.plural / f"{name}.workload.json")

    def status(self, kind: AnyKind, name: str) -> dict[str, Any]:
        return {**self.workload_status_file(kind, name).read(), **self.status_file(kind, name).read()}

    def objects(self, kind: AnyKind) -> Iterator[Manifest]:
        """The objects of `kind`, with their status, oldest first."""
        found = []
        for path in sorted((self.root / "objects" / kind.plural).glob("*.yaml")):
            try:
                manifest: Manifest = yaml.safe_load(path.read_text())
            except FileNotFoundError:
                continue
            manifest["status"] = self.status(kind, manifest["metadata"]["name"])
            found.append(manifest)
        yield from sorted(found, key=lambda m: (m["metadata"]["creationTimestamp"], m["metadata"]["name"]))

    def get(self, kind: AnyKind, name: str) -> Manifest | None:
        return next((m for m in self.objects(kind) if m["metadata"]["name"] == name), None)

    def validate(self, manifest: Manifest) -> AnyKind | None:
        """The kind of a valid ScaleML object, None for a volume claim; LocalError says what is wrong.

        The spec is judged as the API server judges it (`parse_spec`), with its messages' field names.
        """
        api_version, kind_name = manifest.get("apiVersion"), manifest.get("kind", "")
        name = (manifest.get("metadata") or {}).get("name", "")
        if api_version == "v1" and kind_name == "PersistentVolumeClaim":
            _check_claim_name(str(name))
            return None
        if api_version != API_VERSION:
            raise LocalError(f"{kind_name}/{name}: local mode runs {API_VERSION} objects and volume claims only")
        kind = kind_named(kind_name)
        # kubectl decodes strictly: a field the object does not have is an error, not ignored.
        if unknown := sorted(set(manifest) - _OBJECT_FIELDS):
            raise LocalError(f'{kind.singular}/{name} is invalid: unknown field "{unknown[0]}"')
        if (wrong := kind.name_error(str(name))) is not None:
            raise LocalError(f"{kind.singular}/{name} is invalid: metadata.name {wrong}")
        if manifest.get("spec") is None:
            raise LocalError(f"{kind.singular}/{name} is invalid: spec: Required value")
        try:
            parse_spec(kind, manifest["spec"])
        except ValueError as error:
            raise LocalError(f"{kind.singular}/{name} is invalid: {error}") from error
        return kind

    def apply(self, manifest: Manifest) -> str:
        """Validates and stores one document; returns what kubectl would print ("trainingjob/churn created")."""
        kind, name = self.validate(manifest), manifest["metadata"]["name"]
        if kind is None:
            return f"persistentvolumeclaim/{name} created (folder {self.volume(name)})"
        path = self._object_path(kind, name)
        existing = self.get(kind, name)
        metadata = {
            **manifest["metadata"],
            "namespace": manifest["metadata"].get("namespace") or DEFAULT_NAMESPACE,
            "uid": existing["metadata"]["uid"] if existing else str(uuid.uuid4()),
            "creationTimestamp": existing["metadata"]["creationTimestamp"] if existing else timestamp(),
        }
        # The spec as the API server would store it, with the defaults of the CRD's schema filled in.
        spec = defaulted(openapi_schema(kind.spec), admitted(manifest["spec"]))
        stored = {"apiVersion": API_VERSION, "kind": kind.kind, "metadata": metadata, "spec": spec}
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(yaml.safe_dump(stored, sort_keys=False))
        os.replace(temporary, path)
        return f"{kind.singular}/{name} {'configured' if existing else 'created'}"

    def delete(self, kind: AnyKind, name: str) -> bool:
        """Removes the object and its status; the supervisor then stops its processes. False if absent."""
        path = self._object_path(kind, name)
        if not path.exists():
            return False
        path.unlink()
        for status in (self.status_file(kind, name), self.workload_status_file(kind, name)):
            status.path.unlink(missing_ok=True)
        return True

    # The supervisor's bookkeeping.

    @property
    def pid_file(self) -> Path:
        return self.root / PID_FILE

    @property
    def log_file(self) -> Path:
        return self.root / "supervisor.log"

    def supervisor_pid(self) -> int | None:
        """The pid of the running supervisor of this state directory, if any."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if running(pid) else None

    def stop_supervisor(self) -> None:
        if (pid := self.supervisor_pid()) is not None:
            os.kill(pid, signal.SIGTERM)

    def processes(self) -> dict[str, Any]:
        """What the supervisor runs: per object, its process ids and local ports."""
        try:
            running: dict[str, Any] = json.loads((self.root / PROCESSES_FILE).read_text())
        except FileNotFoundError:
            return {}
        return running

    def write_processes(self, running: dict[str, Any]) -> None:
        path = self.root / PROCESSES_FILE
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(running, indent=1))
        os.replace(temporary, path)
