"""Building blocks of the serving tests: a real Triton server over a repository the model agent builds."""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from scaleml_api.runtime import ServingRun
from scaleml_workloads.serving import agent, tritonserver
from tests.support.ports import free_port
from tests.support.requirements import skip_or_fail
from tests.workloads.runs import MODEL_NAME, export_churn_model

FEATURES = 5


@dataclass(frozen=True)
class Server:
    """A running Triton server and the agent that feeds its repository."""

    ports: tritonserver.Ports
    repository: Path
    log: Path

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"


def serving_run(source: Path, root: Path, spec: Mapping[str, Any] | None = None, **fields: Any) -> ServingRun:
    return ServingRun.model_validate(
        {
            "namespace": "ml",
            "name": "churn",
            "spec": {"model": {"fromTrainingJob": "churn"}, "backend": "python", **(spec or {})},
            "modelName": MODEL_NAME,
            "sourceDir": str(source),
            "servingDir": str(root / "serving"),
            "pollSeconds": 0.5,
            "healthPort": 0,
            **fields,
        }
    )


@contextlib.contextmanager
def triton(run: ServingRun, root: Path, admin_key: str | None = None, extra: Sequence[str] = ()) -> Iterator[Server]:
    """Triton with the pod's options (and `extra` ones) on free local ports, the agent following the source in a thread.

    With `admin_key`, Triton's management APIs are restricted to callers that send it, as in a pod.
    """
    try:
        cache = root / "triton-cache"
        tritonserver.backend_directory(cache)
    except tritonserver.TritonUnavailableError as error:
        skip_or_fail(str(error))
    if agent.sync(run) is None:
        raise AssertionError(f"no version to serve in {run.source_dir}")
    ports = tritonserver.Ports(free_port(), free_port(), free_port())
    log = root / "triton.log"
    stop = threading.Event()
    watcher = threading.Thread(target=agent.watch, args=(run, stop), daemon=True)
    with log.open("wb") as sink:
        process = tritonserver.start(Path(run.serving_dir), ports, cache, extra, log=sink, admin_key=admin_key)
        try:
            tritonserver.wait_ready(process, ports.http)
            watcher.start()
            yield Server(ports, Path(run.serving_dir), log)
        except BaseException:
            print(log.read_text()[-4000:])
            raise
        finally:
            stop.set()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def expected_outputs(version_dir: Path, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """What the exported TorchScript model computes for `batch`, in this process."""
    model = torch.jit.load(str(version_dir / "model.pt")).eval()  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        result: npt.NDArray[np.float32] = model(torch.from_numpy(batch)).numpy()
    return result


def feature_batch(rows: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Rows of the churn model's input: five float features, as the model's imputation and scaling expect."""
    return np.random.default_rng(seed).normal(size=(rows, FEATURES)).astype(np.float32)


def export_another_version(model_dir: Path, seed: int) -> int:
    """Trains the churn model again (another seed) into `model_dir`'s repository; returns the new version."""
    export_churn_model(model_dir.parent.parent, f"run-{seed}.json", data_seed=seed, epochs=1, seed=seed)
    return max(int(entry.name) for entry in model_dir.iterdir() if entry.name.isdigit())
