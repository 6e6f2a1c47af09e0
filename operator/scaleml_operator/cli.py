"""The `scaleml` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from scaleml_api.arguments import non_negative_float, positive_float, positive_int
from scaleml_operator.config import DEFAULT_TRITON_IMAGE, DEFAULT_WORKLOAD_IMAGE, OperatorConfig

# The peering object (ClusterKopfPeering) the operator replicas share; the operator creates it.
PEERING_NAME = "scaleml"
# Entry points that add subcommands: each is a function taking the subparsers.
COMMANDS_GROUP = "scaleml.commands"


def _operator(args: argparse.Namespace) -> int:
    # Imported here so that subcommands which need no kopf work where it is not installed.
    from prometheus_client import start_http_server

    import scaleml_operator.handlers  # noqa: F401  (registers the handlers)
    from scaleml_operator import decoding, memory

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
    )
    # One line per liveness probe would drown the operator's own log, and so would kopf's line per
    # handler run ("Handler 'job-status' succeeded."): the transitions are logged as the Events they post.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.bind_address)
    # An object nested deeper than json decodes must not stop the watches (and the operator) for everyone.
    decoding.install()
    failed = asyncio.run(_serve(args))
    if not failed and memory.REPLACEMENT.asked:
        memory.REPLACEMENT.replace()
    # Non-zero, so that the Deployment restarts it: a new process watches afresh.
    return 1 if failed else 0


async def _serve(args: argparse.Namespace) -> list[str]:
    """Runs kopf until it is stopped; returns the watches whose failure stopped it (none: a plain stop)."""
    import kopf

    from scaleml_operator import watch_guard
    from scaleml_operator.handlers.settings import default_priority

    stop = asyncio.Event()
    guard = asyncio.create_task(watch_guard.guard(stop))
    liveness = f"http://{args.bind_address}:{args.liveness_port}/healthz" if args.liveness_port else None
    try:
        await kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            standalone=args.standalone,
            priority=args.priority if args.priority is not None else default_priority(),
            # A peering name makes peering mandatory in kopf, which --standalone must not be.
            peering_name=None if args.standalone else args.peering,
            liveness_endpoint=liveness,
            stop_flag=stop,
            memo=kopf.Memo(
                stop=stop,
                config=OperatorConfig(
                    workload_image=args.workload_image,
                    triton_image=args.triton_image,
                    retrain_entrypoint_prefixes=tuple(args.retrain_entrypoint_prefix),
                    retrain_image_prefixes=tuple(args.retrain_image_prefix),
                    workers=args.workers,
                    resync_seconds=args.resync_seconds,
                    cluster_wide=not args.namespace,
                    recycle_above_mib=args.recycle_above_mib,
                ),
            ),
        )
    finally:
        guard.cancel()  # a guard that returned stays as it was
    return guard.result() if guard.done() and not guard.cancelled() else []


def _crds(args: argparse.Namespace) -> int:
    from scaleml_api.crdgen import crd_files
    from scaleml_api.generated import write_files

    files = crd_files()
    if args.output is None:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    write_files(args.output, files)
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="scaleml", description="Train, serve and monitor models on Kubernetes.")
    commands = root.add_subparsers(dest="command", required=True)

    operator = commands.add_parser("operator", help="Run the operator against the current kubeconfig or cluster.")
    operator.add_argument(
        "-n", "--namespace", action="append", help="Serve only this namespace (repeatable; globs allowed)."
    )
    operator.add_argument("--standalone", action="store_true", help="Run without peering (a single replica).")
    operator.add_argument("--peering", default=PEERING_NAME, help="Peering object shared by the replicas.")
    operator.add_argument("--priority", type=int, help="Peering priority; default: derived from the pod name.")
    operator.add_argument("--bind-address", default="0.0.0.0", help="Address of the probe and metrics servers.")
    operator.add_argument("--liveness-port", type=int, default=8080, help="Port of /healthz; 0 turns it off.")
    operator.add_argument("--metrics-port", type=int, default=8081, help="Port of /metrics; 0 turns it off.")
    operator.add_argument(
        "--workload-image",
        default=os.environ.get("SCALEML_WORKLOAD_IMAGE", DEFAULT_WORKLOAD_IMAGE),
        help="Image of training pods, model agents, capture converters and monitors, where a spec names none "
        "(env SCALEML_WORKLOAD_IMAGE).",
    )
    operator.add_argument(
        "--triton-image",
        default=os.environ.get("SCALEML_TRITON_IMAGE", DEFAULT_TRITON_IMAGE),
        help="Triton server image of ModelDeployments whose spec names none (env SCALEML_TRITON_IMAGE).",
    )
    operator.add_argument(
        "--retrain-entrypoint-prefix",
        action="append",
        default=_comma_separated("SCALEML_RETRAIN_ENTRYPOINT_PREFIXES"),
        help="A Python package whose custom model code (model.entrypoint) DriftMonitors may retrain "
        "(repeatable; env SCALEML_RETRAIN_ENTRYPOINT_PREFIXES, comma-separated). None by default: retraining "
        "runs code someone else wrote on behalf of whoever may edit a DriftMonitor.",
    )
    operator.add_argument(
        "--retrain-image-prefix",
        action="append",
        default=_comma_separated("SCALEML_RETRAIN_IMAGE_PREFIXES"),
        help="An image reference prefix, e.g. registry.example/ml/, whose TrainingJobs DriftMonitors may retrain "
        "(repeatable; env SCALEML_RETRAIN_IMAGE_PREFIXES, comma-separated). None by default: only jobs that run "
        "the workload image are retrained.",
    )
    operator.add_argument(
        "--workers",
        type=positive_int,
        default=OperatorConfig.workers,
        help="Reconciles whose API calls run at once (default: %(default)s).",
    )
    operator.add_argument(
        "--resync-seconds",
        type=positive_float,
        default=OperatorConfig.resync_seconds,
        help="Period in which every object's status is recomputed from what the watches hold, so that a change "
        "whose handling failed is not lost, and children deleted by hand are found and made again; costs one "
        "metadata list per child kind when nothing changed (default: %(default)s).",
    )
    operator.add_argument(
        "--recycle-above-mib",
        type=non_negative_float,
        default=OperatorConfig.recycle_above_mib,
        help="Once a wave of deletions has ended and at most a tenth of the most objects served at once are left, "
        "the operator replaces its process with a fresh one (same pid and arguments) if its resident memory is "
        "still more than this above its start-up size: CPython keeps the memory of objects that are gone. "
        "0 turns it off (default: %(default)s).",
    )
    operator.add_argument("-v", "--verbose", action="store_true", help="Log at debug level.")
    operator.set_defaults(run=_operator)

    crds = commands.add_parser("crds", help="Print the CustomResourceDefinitions, or write them to a directory.")
    crds.add_argument("output", nargs="?", type=Path, help="Directory to write one YAML file per CRD into.")
    crds.set_defaults(run=_crds)

    # Other components add their subcommands (local mode: `scaleml local`, `scaleml demo`) where installed.
    for entry in entry_points(group=COMMANDS_GROUP):
        try:
            register = entry.load()
        except ImportError as error:
            commands.add_parser(entry.name, help=f"Not installed here ({error.name} is missing).")
            continue
        register(commands)
    return root


def _comma_separated(variable: str) -> list[str]:
    return [item for item in os.environ.get(variable, "").split(",") if item]


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
