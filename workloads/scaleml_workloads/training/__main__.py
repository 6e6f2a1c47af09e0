"""`python -m scaleml_workloads.training`: one worker of a TrainingJob, started by torchrun.

    torchrun --nnodes=MIN:MAX --nproc-per-node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 \\
        --rdzv-id=UID --max-restarts=R -m scaleml_workloads.training

The run (a TrainingRun as JSON or YAML) comes from --config FILE: in a pod, the file of a ConfigMap
the operator mounts (/etc/scaleml/run.json); without --config, from $SCALEML_CONFIG.
`--check` validates the config, the data, the model and its warm start without training, for an
init container: torchrun turns a worker's exit code into its own 1 and retries it, so only a
check outside torchrun can end the pod with EXIT_INVALID_INPUT.

Exit codes (scaleml_api.runtime): 0 on success (rank 0 then writes {"modelVersion": N} to the
termination log), EXIT_INVALID_INPUT (2) when the data or the spec is wrong (the reason goes to the
termination log), 1 for anything else. torchrun turns any failure into its own 1, so a worker also
tells the launcher how it ended (`launch.mark`): finished, invalid input, lost its group (a peer,
the store or a connection went away; see `interruption`), or a program error. The launcher makes
the pod's exit code from that.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from scaleml_api.runtime import EXIT_INVALID_INPUT, EXIT_SUCCEEDED, write_termination_message
from scaleml_workloads.training.config import load_run
from scaleml_workloads.training.data import load_run_data
from scaleml_workloads.training.errors import InvalidInputError
from scaleml_workloads.training.launch import Outcome, mark

log = logging.getLogger("scaleml_workloads.training")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaleml_workloads.training", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="a TrainingRun as JSON or YAML, instead of $SCALEML_CONFIG")
    parser.add_argument("--check", action="store_true", help="check the config, data and model, then exit")
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        run = load_run(args.config)
        data = load_run_data(run)
        # Imported only now, so that bad input is reported without waiting for torch's import.
        from scaleml_workloads.training.job import check, run_job

        if args.check:
            check(run, data)
            log.info("config, data and model are valid")
            return EXIT_SUCCEEDED
        version = run_job(run, data)
    except InvalidInputError as error:
        log.error("invalid input: %s", error)
        write_termination_message(str(error))
        mark(Outcome.INVALID_INPUT)
        return EXIT_INVALID_INPUT
    except Exception as error:
        write_termination_message(f"{type(error).__name__}: {error}")
        # Imported only here, as job is above: it imports torch.
        from scaleml_workloads.training.interruption import lost_group

        if lost_group(error):
            log.error("lost the group (a peer, the store or a connection went away); the run is interrupted")
            mark(Outcome.INTERRUPTED)
        else:
            mark(Outcome.PROGRAM_ERROR)
        raise
    if version is not None:
        write_termination_message(json.dumps({"modelVersion": version}))
    if not args.check:
        mark(Outcome.DONE)
    return EXIT_SUCCEEDED


def _configure_logging() -> None:
    rank = os.environ.get("RANK", "0")
    world = os.environ.get("WORLD_SIZE", "1")
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [rank {rank}/{world}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The ONNX exporter logs each of its passes at INFO, and warns that torchvision's operators are
    # missing, which no ScaleML model uses.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def _exit(code: int) -> NoReturn:
    """End the process without finalising the interpreter.

    gloo's threads outlive `destroy_process_group` (torch 2.15) and are torn down only while the
    interpreter finalises; a worker that had exported its version was seen to die there with
    "terminate called without an active exception" (SIGABRT), most likely a C++ thread taking the
    GIL during finalisation, which CPython ends with `pthread_exit` through noexcept frames. By
    now the termination log, the launcher's mark, the export and the status patcher are closed;
    only the log streams are left to flush.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
