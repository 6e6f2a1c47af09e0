"""`python -m tests.workloads.export_race ROOT PROCESSES`: one of several processes writing one repository.

The caller writes the data file `ROOT/data/train.parquet`. Each process builds the same small
untrained model and, once all PROCESSES are ready, exports it EXPORTS_PER_PROCESS times into
`ROOT/models/churn`. Exports take long enough that two rarely claim a number at the same instant,
so each process then also publishes COPIES_PER_PROCESS ready-made copies of a version in a tight
loop, all processes starting together, which makes them race for the same numbers.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from scaleml_api.runtime import TrainingRun
from scaleml_workloads.export.repository import publish, staging_dir
from scaleml_workloads.training.checkpoint import Progress
from scaleml_workloads.training.data import load_run_data, split_rows
from scaleml_workloads.training.distributed import Topology
from scaleml_workloads.training.job import export_result
from scaleml_workloads.training.loop import TrainingResult
from scaleml_workloads.training.models import build_model
from tests.workloads.runs import training_run

EXPORTS_PER_PROCESS = 2
COPIES_PER_PROCESS = 20
COMPLETE_VERSION = [
    "__pycache__",
    "explain",
    "labels.json",
    "model.pt",
    "model.py",
    "model_card.json",
    "profile.json",
    "state_dict.pt",
    "transparency.html",
    "transparency.json",
]


def main(root: Path, processes: int) -> None:
    run = TrainingRun.model_validate(training_run(root, {"checkpoint": None}))
    data = load_run_data(run)
    train_rows, validation_rows = split_rows(data.rows, run.spec.data.validation_split, 0)
    now = datetime.now(UTC)
    result = TrainingResult(
        model=build_model(run.spec.model, data, train_rows),
        progress=Progress(history=[{"epoch": 0, "loss": 1.0, "validationMetric": None}]),
        train_rows=train_rows,
        validation_rows=validation_rows,
        validation_metric=None,
        parent="",
        started=now,
        finished=now,
        seconds=0.0,
    )
    topology = Topology(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    _barrier(root, "exports", processes)
    exported = [export_result(run, data, result, topology)[0] for _ in range(EXPORTS_PER_PROCESS)]
    model_dir = root / "models" / run.spec.output.model_name
    copies = []
    for _ in range(COPIES_PER_PROCESS):
        copy = staging_dir(model_dir)
        shutil.copytree(model_dir / str(exported[0]), copy, dirs_exist_ok=True)
        copies.append(copy)
    _barrier(root, "copies", processes)
    for copy in copies:
        publish(copy)


def _barrier(root: Path, name: str, processes: int) -> None:
    (root / f"{name}-{os.getpid()}").touch()
    while len(list(root.glob(f"{name}-*"))) < processes:
        time.sleep(0.0001)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [exporter {os.getpid()}] %(message)s")
    main(Path(sys.argv[1]), int(sys.argv[2]))
