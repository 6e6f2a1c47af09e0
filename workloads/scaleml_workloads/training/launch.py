"""`python -m scaleml_workloads.training.launch [torchrun options] -m scaleml_workloads.training`: the pod's command.

torchrun, run as a child, with the exit code the pod should end with. torchrun itself ends with 1
both when a worker failed and when, after every worker finished, it lost the race to close the
rendezvous: the agent that hosts the c10d store may exit first, and the others then fail to reach
it. The Job's podFailurePolicy fails a TrainingJob at once on exit code 1, so a finished run must
not end that way. Each worker leaves a mark when it finishes (see `mark_done`); when every local
worker did, the node's part of the run is done, whatever torchrun says after that.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

DONE_DIR_ENV: Final = "SCALEML_DONE_DIR"

log = logging.getLogger("scaleml_workloads.training.launch")


def mark_done() -> None:
    """Called by a worker that finished its part of the run (when launched by this module)."""
    directory = os.environ.get(DONE_DIR_ENV)
    if directory:
        (Path(directory) / f"local-rank-{os.environ.get('LOCAL_RANK', '0')}").touch()


def _local_workers(options: list[str]) -> int:
    for index, option in enumerate(options):
        if match := re.fullmatch(r"--nproc[-_]per[-_]node=(\d+)", option):
            return int(match.group(1))
        if option in ("--nproc-per-node", "--nproc_per_node") and index + 1 < len(options):
            return int(options[index + 1])
    return 1


def main(argv: list[str] | None = None) -> int:
    options = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [launch] %(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="scaleml-done-") as done:
        env = {**os.environ, DONE_DIR_ENV: done}
        code = subprocess.call([sys.executable, "-m", "torch.distributed.run", *options], env=env)
        finished = len(list(Path(done).iterdir()))
    expected = _local_workers(options)
    if code != 0 and finished >= expected:
        log.warning("torchrun exited with %d after all %d local workers finished: the run is done", code, expected)
        return 0
    return code


if __name__ == "__main__":
    raise SystemExit(main())
