"""`scaleml local` and `scaleml demo`, added to the `scaleml` command through its entry points."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scaleml_local import commands
from scaleml_local.state import LocalError, State


def _local(args: argparse.Namespace) -> int:
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
    # The demo's own dependencies (rich, tritonclient, scikit-learn) load only when it runs.
    from scaleml_local.demo import main

    return main(args.state.resolve(), args.manifests, args.scenario)


def register(commands: Any) -> None:
    """Adds the subcommands to the `scaleml` command's subparsers."""
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
    demo.add_argument("--manifests", type=Path, help="A folder of YAML to run instead of the demo's own.")
    demo.add_argument(
        "--scenario",
        choices=("retrain", "bad-retrain"),
        default="retrain",
        help="retrain: the retrained version passes the gates and rolls out; bad-retrain: a retrained version that "
        "is worse is held back by the ModelDeployment's promotion gates (default: %(default)s).",
    )
    demo.set_defaults(run=_demo)
