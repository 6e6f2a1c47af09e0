"""The model agent: keeps a serving pod's Triton repository in step with the exported versions.

Triton reads a repository that the agent builds in the pod (an emptyDir): the model's
config.pbtxt, generated from the ModelDeployment's spec and the served version's model card, and
one symbolic link per served version into the read-only model directory of the TrainingJob's
volume. Triton runs in poll mode, so a version linked later is loaded in place and takes over once
it is ready, with no restart and no failed request. The agent is a native sidecar: the pod's main
containers start once its health endpoint answers, that is once a version is linked.

With `spec.explain.enabled`, the agent serves the version's explanation model beside it the same
way: `<model>-explain/config.pbtxt` and a link to the version's `explain/` directory.

Links are only ever added (or removed when their target disappears): with the `latest` version
policy Triton serves the newest link and ignores the others, so none has to go away while it
might still be serving.

When it starts, the agent also makes the pod's Triton admin key (`ensure_admin_key`): a random
value in a hidden file of the repository, which Triton's command reads to restrict its management
APIs (runtime.RESTRICTED_APIS) to callers that send it. Made once per pod, so a restarted agent
or Triton keeps the same one.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pydantic import ValidationError

from scaleml_api.card import CardTensors
from scaleml_api.repository import EXPLAIN_DIR, MODEL_CARD_FILE, TRITON_CONFIG_FILE
from scaleml_api.runtime import ADMIN_KEY_FILE, CONFIG_ENV, EXIT_INVALID_INPUT, ServingRun
from scaleml_workloads.atomic import write_text_atomically
from scaleml_workloads.export.repository import versions
from scaleml_workloads.serving.config import MODEL_FILES, deployment_config, explain_config

log = logging.getLogger(__name__)


class NotServableError(Exception):
    """The version to serve cannot be served (no model card, no file for the backend); says why."""


def chosen_version(source: Path, pinned: int | None, up_to: int | None = None) -> int | None:
    """The version to serve: the pinned one once it exists, else the newest up to `up_to`; None while there is none."""
    present = versions(source)
    if pinned is not None:
        return pinned if pinned in present else None
    allowed = [version for version in present if up_to is None or version <= up_to]
    return allowed[-1] if allowed else None


def sync(run: ServingRun) -> int | None:
    """Brings the serving repository up to date; returns the version linked last (None: nothing to serve yet)."""
    source, model_dir = Path(run.source_dir), Path(run.serving_dir) / run.model_name
    version = chosen_version(source, run.version, run.up_to)
    if version is None:
        return None
    version_dir = source / str(version)
    model_file = MODEL_FILES[run.spec.backend]
    if not (version_dir / model_file).exists():
        raise NotServableError(f"{version_dir} has no {model_file}, which the {run.spec.backend} backend loads")
    try:
        card = CardTensors.model_validate_json((version_dir / MODEL_CARD_FILE).read_text())
    except (OSError, ValidationError) as error:
        raise NotServableError(f"{version_dir / MODEL_CARD_FILE} is missing or unreadable: {error}") from error
    model_dir.mkdir(parents=True, exist_ok=True)
    config = deployment_config(run.spec, run.model_name, card.inputs, card.outputs, run.version, run.traces_dir)
    _replace(model_dir / TRITON_CONFIG_FILE, config.render())
    _link(model_dir, version, version_dir, source)
    if run.spec.explain.enabled:
        explain_dir, explaining = version_dir / EXPLAIN_DIR, explain_config(config)
        if (explain_dir / MODEL_FILES[explaining.backend]).exists():
            explainer = Path(run.serving_dir) / explaining.name
            explainer.mkdir(parents=True, exist_ok=True)
            _replace(explainer / TRITON_CONFIG_FILE, explaining.render())
            _link(explainer, version, explain_dir, source)
        else:
            _unexplained(version_dir)
    return version


def _link(model_dir: Path, version: int, target: Path, source: Path) -> None:
    """Links `target` as `version` of the served `model_dir` (config first), and unlinks versions that are gone."""
    link = model_dir / str(version)
    if not link.is_symlink():
        # Config first, then the version: Triton never sees a version without the tensors it has.
        link.symlink_to(target.resolve(), target_is_directory=True)
        log.info("linked version %d of %s", version, model_dir.name)
    for entry in model_dir.iterdir():
        if entry.is_symlink() and not entry.exists():
            log.warning("version %s of %s disappeared from %s; unlinking it", entry.name, model_dir.name, source)
            entry.unlink()


@functools.cache
def _unexplained(version_dir: Path) -> None:
    """Says once per version that it has no explanation model to serve."""
    log.warning(
        "explain is enabled but %s has no explanation model (exported without TorchScript, over token ids, or by "
        "an older release); serving the model alone",
        version_dir,
    )


def ensure_admin_key(serving_dir: Path) -> str:
    """The pod's Triton admin key, from `serving_dir`, where it is made (random, mode 0640) the first time."""
    path = serving_dir / ADMIN_KEY_FILE
    if path.is_file() and (key := path.read_text().strip()):
        return key
    serving_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    temporary = path.with_name(f"{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(descriptor, "w") as sink:
        os.fchmod(sink.fileno(), 0o640)
        sink.write(key)
    os.replace(temporary, path)
    log.info("made the Triton admin key in %s", path)
    return key


def _replace(path: Path, content: str) -> None:
    """Writes `path` atomically, and only when its content changes (Triton reloads on every change)."""
    if path.exists() and path.read_text() == content:
        return
    write_text_atomically(path, content)


class _Health(BaseHTTPRequestHandler):
    linked = threading.Event()

    def do_GET(self) -> None:
        ok = self.path == "/healthz" and self.linked.is_set()
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"ok\n" if ok else b"waiting for a model version\n")

    def log_message(self, format: str, *args: object) -> None:
        """Probes every few seconds would drown the log."""


def serve_health(port: int) -> threading.Event:
    server = ThreadingHTTPServer(("", port), _Health)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return _Health.linked


def watch(run: ServingRun, stop: threading.Event | None = None, config: Path | None = None) -> None:
    """Syncs every `poll_seconds` until `stop` is set; logs (once) while there is nothing to serve.

    With `config`, the file the run came from is read again before each sync, so that local mode
    can move `up_to` (the promotion gates' choice) without restarting the agent.
    """
    stop = stop or threading.Event()
    linked = serve_health(run.health_port) if run.health_port else threading.Event()
    waiting_said = False
    last_problem = ""
    while not stop.is_set():
        if config is not None:
            run = _reread(config, run)
        try:
            version = sync(run)
            last_problem = ""
        except NotServableError as error:
            version = None
            if str(error) != last_problem:
                log.error("%s", error)
                last_problem = str(error)
        if version is not None:
            linked.set()
        elif not linked.is_set() and not waiting_said and not last_problem:
            wanted = f"version {run.version}" if run.version else "a first version"
            log.info("waiting for %s of %s in %s", wanted, run.model_name, run.source_dir)
            waiting_said = True
        stop.wait(run.poll_seconds)


def _reread(config: Path, run: ServingRun) -> ServingRun:
    """The run as `config` says now; `run` unchanged if the file cannot be read (it is replaced atomically)."""
    try:
        return ServingRun.model_validate_json(config.read_text())
    except (OSError, ValidationError) as error:
        log.warning("cannot read %s again, keeping the run as it was: %s", config, error)
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaleml_workloads.serving.agent", description=__doc__)
    parser.add_argument("--config", type=Path, help=f"ServingRun JSON file (default: the {CONFIG_ENV} variable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        raw = args.config.read_text() if args.config else os.environ[CONFIG_ENV]
        run = ServingRun.model_validate_json(raw)
    except (OSError, KeyError, ValidationError) as error:
        log.error("no valid ServingRun: %s", error)
        return EXIT_INVALID_INPUT
    ensure_admin_key(Path(run.serving_dir))
    watch(run, config=args.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
