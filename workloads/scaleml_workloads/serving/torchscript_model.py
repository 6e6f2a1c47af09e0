"""Triton Python-backend model that runs the TorchScript file of its version directory.

Exported next to model.pt as model.py, so a repository is served by the `python` backend wherever
the libtorch backend is missing (CPU-only Triton builds, local mode). It runs inside Triton's
Python stub, which provides `triton_python_backend_utils`; requests that Triton's dynamic batcher
hands over together go through the model as one batch.

With capture on (the parameters `scaleml_capture_rate` and `scaleml_traces_dir` of its config),
it writes one request in every `scaleml_capture_rate` as a trace file, in the form Triton's own
tracer writes, for the capture converter: Triton's tracer is off for the python backend, which it
crashes under concurrent load. Writing a trace never fails or holds up a request beyond its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

# The KServe datatype of each NumPy type a TorchScript model takes or gives.
_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.bool_): "BOOL",
}


_QUEUED = 1024
# How long the thread lets sampled requests gather between two files.
_GATHER_SECONDS = 0.1


class _Traces:
    """One request in every `rate`, written as a trace file into `directory` by a thread of its own.

    At most _QUEUED sampled requests wait for the thread; more are not captured. What is lost (not
    queued, or not written) is counted in `.model-<pid>.json` beside the traces, for the converter's
    metrics (MODEL_COUNTS_GLOB in scaleml_workloads.capture.converter).
    """

    def __init__(self, directory: str, rate: int, model: str, version: str) -> None:
        self.directory = Path(directory)
        self.rate = rate
        self.model = model
        self.version = version
        self.count = 0
        self.lost = {"queue_full": 0, "write_error": 0}
        self._reported = dict(self.lost)
        self._warned = False
        self._queue: queue.Queue[tuple[int, str, int, dict[str, Any], dict[str, Any]]] = queue.Queue(_QUEUED)
        threading.Thread(target=self._run, name="capture-traces", daemon=True).start()

    def offer(self, request_id: str, started_ns: int, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Counts a request, and hands it to the thread if it is the one in `rate`; never waits."""
        self.count += 1
        if self.count % self.rate == 0:
            try:
                self._queue.put_nowait((self.count, request_id, started_ns, _copies(inputs), _copies(outputs)))
            except queue.Full:
                self.lost["queue_full"] += 1

    def _run(self) -> None:
        while True:
            # Whatever waits goes into one file: under load, fewer and larger files for the converter.
            waiting = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(waiting) < _QUEUED:
                    waiting.append(self._queue.get_nowait())
            if not self._write([entry for sampled in waiting for entry in self._entries(*sampled)]):
                self.lost["write_error"] += len(waiting)
            if self.lost != self._reported:
                self._reported = dict(self.lost)
                self._write_atomically(f".model-{os.getpid()}.json", json.dumps(self._reported))
            time.sleep(_GATHER_SECONDS)

    def _entries(
        self, trace: int, request_id: str, started_ns: int, inputs: dict[str, Any], outputs: dict[str, Any]
    ) -> list[str]:
        # Printed as JSON would print them, never breaking out of the string.
        request_id = request_id.replace("\\", "").replace('"', "")
        entries = [
            f'{{"id":{trace},"model_name":"{self.model}","model_version":{self.version},"request_id":"{request_id}"}}',
            f'{{"id":{trace},"timestamps":[{{"name":"REQUEST_START","ns":{started_ns}}}]}}',
        ]
        for activity, tensors in (("TENSOR_QUEUE_INPUT", inputs), ("TENSOR_BACKEND_OUTPUT", outputs)):
            for name, array in tensors.items():
                datatype = _DATATYPES.get(array.dtype)
                if datatype is None:
                    continue
                values = array.astype(np.int8) if datatype == "BOOL" else array
                data = ",".join(map(repr, values.ravel().tolist()))
                shape = ",".join(map(str, array.shape))
                entries.append(
                    f'{{"id":{trace},"activity":"{activity}","tensor":{{"name":"{name}","data":"{data}",'
                    f'"shape":"{shape}","dtype":"{datatype}"}}}}'
                )
        return entries

    def _write(self, entries: list[str]) -> bool:
        # Named as Triton names its trace files, unique across the instances of the model.
        index = time.monotonic_ns() * 100 + os.getpid() % 100
        return self._write_atomically(f"trace.json.{index}", "[" + ",".join(entries) + "]")

    # Not scaleml_workloads.atomic: this file runs in Triton's image, where no ScaleML package is.
    def _write_atomically(self, name: str, text: str) -> bool:
        """Writes a file, complete before it appears under its name; False (the first error logged) when it cannot."""
        temporary = self.directory / f".{name}.tmp"
        try:
            temporary.write_text(text)
            temporary.rename(self.directory / name)
        except OSError as error:
            if not self._warned:
                print(f"cannot write capture traces to {self.directory}: {error}", file=sys.stderr)
                self._warned = True
            return False
        return True


def _copies(tensors: dict[str, Any]) -> dict[str, Any]:
    """Copies of a request's arrays: its inputs live in shared memory that Triton reuses once it is answered."""
    return {name: array.copy() for name, array in tensors.items()}


def _parameter(config: dict[str, Any], key: str) -> str:
    return str(config.get("parameters", {}).get(key, {}).get("string_value", ""))


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.input_name: str = config["input"][0]["name"]
        self.output_name: str = config["output"][0]["name"]
        gpu = args["model_instance_kind"] == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        path = Path(args["model_repository"]) / args["model_version"] / "model.pt"
        self.model = torch.jit.load(str(path), map_location=self.device).eval()  # type: ignore[no-untyped-call]
        # An explanation model computes gradients, which inference mode forbids.
        self.gradients = _parameter(config, "scaleml_gradients") == "true"
        rate = int(_parameter(config, "scaleml_capture_rate") or 0)
        self.traces = (
            _Traces(_parameter(config, "scaleml_traces_dir"), rate, args["model_name"], args["model_version"])
            if rate > 0
            else None
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        started_ns = time.monotonic_ns()
        arrays = [pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests]
        with torch.no_grad() if self.gradients else torch.inference_mode():
            outputs = self.model(torch.from_numpy(np.concatenate(arrays)).to(self.device)).cpu().numpy()
        responses = []
        start = 0
        for request, array in zip(requests, arrays, strict=True):
            end = start + len(array)
            output = np.ascontiguousarray(outputs[start:end])
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, output)]))
            if self.traces is not None:
                self.traces.offer(
                    request.request_id(), started_ns, {self.input_name: array}, {self.output_name: output}
                )
            start = end
        return responses
