"""`python -m scaleml_workloads.training.launch [torchrun options] -m scaleml_workloads.training`: the pod's command.

torchrun, run as a child, with the exit code the pod should end with. torchrun ends with 1 whenever
a worker failed, whatever the reason, and the Job's podFailurePolicy fails a TrainingJob at once on
1; yet a worker also fails when a peer goes away: a pod deleted, preempted or drained takes its
workers with it, and every other worker's next collective fails. So each worker leaves a mark
saying how it ended (see `mark`), and the launcher decides, in this order:

- every local worker finished: 0, whatever torchrun says after that (the agent that hosts the
  c10d store may exit first, and the others then fail to reach it as they close the rendezvous),
  and however long it takes to say it (after FINISHED_GRACE_SECONDS it is stopped);
- the launcher was asked to stop (SIGTERM from the kubelet, or Ctrl-C): it stops torchrun and its
  workers at once and ends with 128 + the signal (143 for SIGTERM), as a pod killed from outside does;
- a local worker's input was invalid: EXIT_INVALID_INPUT;
- a local worker's program failed: 1, which fails the TrainingJob at once;
- otherwise the run was interrupted: local workers lost their group (a peer went away, or the store
  or a connection with it did), or torchrun stopped them or lost its rendezvous before any could
  say why. EXIT_INTERRUPTED: the Job retries the pod, which resumes from the newest checkpoint.

With elastic restarts a local rank runs more than once; the mark of its last run counts.
"""

from __future__ import annotations

import enum
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from scaleml_api.runtime import EXIT_INTERRUPTED, EXIT_INVALID_INPUT, EXIT_SUCCEEDED
from scaleml_workloads.atomic import write_text_atomically

OUTCOME_DIR_ENV: Final = "SCALEML_OUTCOME_DIR"
_MARK_PREFIX: Final = "local-rank-"
# How long torchrun may take to end once every local worker finished: enough to close the rendezvous.
FINISHED_GRACE_SECONDS: Final = 30
# SIGTERM: the kubelet stopping the pod; SIGINT: Ctrl-C on a terminal.
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("scaleml_workloads.training.launch")


class Outcome(enum.StrEnum):
    """How a worker ended, as it tells the launcher."""

    DONE = "done"
    INVALID_INPUT = "invalid-input"
    # The worker lost its group: a peer went away, or the c10d store or a connection did.
    INTERRUPTED = "interrupted"
    PROGRAM_ERROR = "program-error"


def mark(outcome: Outcome) -> None:
    """Called by a worker as it ends (when launched by this module), to say how."""
    directory = os.environ.get(OUTCOME_DIR_ENV)
    if directory:
        # Atomically: a worker stopped as it writes leaves no mark rather than half of one.
        write_text_atomically(Path(directory) / f"{_MARK_PREFIX}{os.environ.get('LOCAL_RANK', '0')}", outcome)


def _marks(directory: Path) -> dict[str, Outcome]:
    """Each local rank's outcome, by its mark's name."""
    return {path.name: Outcome(path.read_text()) for path in directory.glob(f"{_MARK_PREFIX}*")}


def _local_workers(options: list[str]) -> int:
    for index, option in enumerate(options):
        if match := re.fullmatch(r"--nproc[-_]per[-_]node=(\d+)", option):
            return int(match.group(1))
        if option in ("--nproc-per-node", "--nproc_per_node") and index + 1 < len(options):
            return int(options[index + 1])
    return 1


def pod_exit_code(torchrun_code: int, outcomes: Sequence[Outcome], local_workers: int, stopped_by: int | None) -> int:
    """The pod's exit code, from torchrun's, the local workers' marks and the signal that stopped the launcher."""
    done = outcomes.count(Outcome.DONE)
    if torchrun_code == 0 or done >= local_workers:
        if torchrun_code != 0:
            log.warning(
                "torchrun exited with %d after all %d local workers finished: the run is done", torchrun_code, done
            )
        return EXIT_SUCCEEDED
    if stopped_by is not None:
        log.warning("exit %d: stopped by signal %d, with torchrun and its workers", 128 + stopped_by, stopped_by)
        return 128 + stopped_by
    if Outcome.INVALID_INPUT in outcomes:
        log.error("exit %d: a local worker's input is invalid (see its message)", EXIT_INVALID_INPUT)
        return EXIT_INVALID_INPUT
    if Outcome.PROGRAM_ERROR in outcomes:
        log.error("exit 1: a local worker failed with a program error (see its traceback)")
        return 1
    lost = outcomes.count(Outcome.INTERRUPTED)
    why = (
        f"{lost} of {local_workers} local workers lost their group (a peer went away, or the store or a connection did)"
        if lost
        else f"torchrun exited with {torchrun_code} and no local worker said why (it stopped its workers, "
        "or lost its rendezvous or store)"
    )
    log.warning("exit %d (interrupted): %s; a retry resumes from the newest checkpoint", EXIT_INTERRUPTED, why)
    return EXIT_INTERRUPTED


class _Stopper:
    """Passes a stop signal on to torchrun, which stops its workers at once.

    As PID 1 of its container, a process without a handler never gets SIGTERM: the pod would wait
    out its grace period and be killed, and its peers would notice only then.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.torchrun: subprocess.Popen[bytes] | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d: stopping torchrun and its workers", signum)
        self.signum = signum
        if self.torchrun is not None:
            self.torchrun.send_signal(signum)

    def started(self, torchrun: subprocess.Popen[bytes]) -> None:
        self.torchrun = torchrun
        # A signal that came while torchrun was starting.
        if self.signum is not None:
            torchrun.send_signal(self.signum)


def await_torchrun(
    torchrun: subprocess.Popen[bytes], marks: Path, local_workers: int, grace: float = FINISHED_GRACE_SECONDS
) -> int:
    """torchrun's exit code. Once every local worker finished, torchrun has `grace` seconds to end;
    then it is stopped (SIGTERM, SIGKILL 10 s later).

    A worker that finished its part can still hang as it exits, in the teardown of a group whose
    peer is gone (seen with gloo when the other pod's worker aborted at exit): the pod would run on
    with its work done, and the Job would never complete.
    """
    while True:
        try:
            return torchrun.wait(timeout=1)
        except subprocess.TimeoutExpired:
            if list(_marks(marks).values()).count(Outcome.DONE) >= local_workers:
                break
    try:
        return torchrun.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("every local worker finished, but torchrun has not ended %.0f s later: stopping it", grace)
    torchrun.terminate()
    try:
        return torchrun.wait(timeout=10)
    except subprocess.TimeoutExpired:
        torchrun.kill()
        return torchrun.wait()


def main(argv: list[str] | None = None) -> int:
    options = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [launch] %(levelname)s %(message)s")
    stopper = _Stopper()
    for signum in _STOP_SIGNALS:
        signal.signal(signum, stopper.handle)
    with tempfile.TemporaryDirectory(prefix="scaleml-outcomes-") as directory:
        env = {**os.environ, OUTCOME_DIR_ENV: directory}
        torchrun = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *options], env=env)
        stopper.started(torchrun)
        code = await_torchrun(torchrun, Path(directory), _local_workers(options))
        outcomes = _marks(Path(directory))
    if outcomes:
        log.info(
            "torchrun exited with %d; local workers: %s",
            code,
            ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
        )
    return pod_exit_code(code, list(outcomes.values()), _local_workers(options), stopper.signum)


if __name__ == "__main__":
    raise SystemExit(main())
