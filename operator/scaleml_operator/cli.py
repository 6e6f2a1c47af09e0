"""The `scaleml` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scaleml_operator.config import DEFAULT_TRITON_IMAGE, DEFAULT_WORKLOAD_IMAGE

# The peering object (ClusterKopfPeering) the operator replicas share; the operator creates it.
PEERING_NAME = "scaleml"


def _operator(args: argparse.Namespace) -> int:
    # Imported here so that subcommands which need no kopf work where it is not installed.
    import kopf
    from prometheus_client import start_http_server

    import scaleml_operator.handlers  # noqa: F401  (registers the handlers)
    from scaleml_operator.config import OperatorConfig
    from scaleml_operator.handlers.settings import default_priority

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
    )
    # One line per liveness probe would drown the operator's own log.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.bind_address)
    liveness = f"http://{args.bind_address}:{args.liveness_port}/healthz" if args.liveness_port else None
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or (),
            standalone=args.standalone,
            priority=args.priority if args.priority is not None else default_priority(),
            # A peering name makes peering mandatory in kopf, which --standalone must not be.
            peering_name=None if args.standalone else args.peering,
            liveness_endpoint=liveness,
            memo=kopf.Memo(config=OperatorConfig(workload_image=args.workload_image, triton_image=args.triton_image)),
        )
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from scaleml_operator.api.crdgen import crd_files

    files = crd_files()
    if args.output is None:
        sys.stdout.write("---\n".join(files.values()))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.output / name).write_text(content)
    return 0


def _local(args: argparse.Namespace) -> int:
    from scaleml_operator.local import commands
    from scaleml_operator.local.state import LocalError, State

    state = State(args.state.resolve())
    try:
        if args.action == "apply":
            print("\n".join(commands.apply(state, args.filename)))
            pid = commands.start_supervisor(state)
            print(f"supervisor {pid} runs the objects of {state.root} (log: {state.log_file})")
        elif args.action == "get":
            print(commands.get(state, args.kind))
        else:
            if not args.all and not args.filename:
                raise LocalError("say what to delete: -f FILE_OR_DIR or --all")
            print("\n".join(commands.delete(state, args.filename or (), everything=args.all)) or "nothing to delete")
    except LocalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from scaleml_operator.local.demo import main

    return main(args.state.resolve(), args.manifests)


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
        help="Image of training pods, model agents, capture proxies and monitors, where a spec names none "
        "(env SCALEML_WORKLOAD_IMAGE).",
    )
    operator.add_argument(
        "--triton-image",
        default=os.environ.get("SCALEML_TRITON_IMAGE", DEFAULT_TRITON_IMAGE),
        help="Triton server image of ModelDeployments whose spec names none (env SCALEML_TRITON_IMAGE).",
    )
    operator.add_argument("-v", "--verbose", action="store_true", help="Log at debug level.")
    operator.set_defaults(run=_operator)

    crds = commands.add_parser("crds", help="Print the CustomResourceDefinitions, or write them to a directory.")
    crds.add_argument("output", nargs="?", type=Path, help="Directory to write one YAML file per CRD into.")
    crds.set_defaults(run=_crds)

    local = commands.add_parser(
        "local", help="Run TrainingJobs, ModelDeployments and DriftMonitors as local processes."
    )
    local.add_argument(
        "--state",
        type=Path,
        default=Path(".scaleml"),
        help="State directory: volumes, status, logs (default: .scaleml).",
    )
    actions = local.add_subparsers(dest="action", required=True)
    local_apply = actions.add_parser("apply", help="Validate and run the objects of YAML files, as kubectl apply.")
    local_apply.add_argument("-f", "--filename", type=Path, action="append", required=True, help="File or directory.")
    local_get = actions.add_parser("get", help="The objects with kubectl's columns.")
    local_get.add_argument("kind", nargs="?", help="trainingjobs (tj), modeldeployments (md) or driftmonitors (dm).")
    local_delete = actions.add_parser("delete", help="Stop the objects' processes and forget them.")
    local_delete.add_argument("-f", "--filename", type=Path, action="append", help="File or directory.")
    local_delete.add_argument("--all", action="store_true", help="Every object; the supervisor stops too.")
    local.set_defaults(run=_local)

    demo = commands.add_parser("demo", help="Train, serve, monitor and retrain on this machine, in a few minutes.")
    demo.add_argument("--state", type=Path, default=Path(".scaleml/demo"), help="State directory, emptied first.")
    demo.add_argument("--manifests", type=Path, help="The demo's YAML (default: manifests/examples/local).")
    demo.set_defaults(run=_demo)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
