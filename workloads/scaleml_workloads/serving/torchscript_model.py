"""Triton Python-backend model that runs the TorchScript file of its version directory.

Exported next to model.pt as model.py, so a repository is served by the `python` backend wherever
the libtorch backend is missing (CPU-only Triton builds, local mode). It runs inside Triton's
Python stub, which provides `triton_python_backend_utils`; requests that Triton's dynamic batcher
hands over together go through the model as one batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.input_name: str = config["input"][0]["name"]
        self.output_name: str = config["output"][0]["name"]
        gpu = args["model_instance_kind"] == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{args['model_instance_device_id']}" if gpu else "cpu")
        path = Path(args["model_repository"]) / args["model_version"] / "model.pt"
        self.model = torch.jit.load(str(path), map_location=self.device).eval()  # type: ignore[no-untyped-call]

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests]
        with torch.inference_mode():
            outputs = self.model(torch.from_numpy(np.concatenate(arrays)).to(self.device)).cpu().numpy()
        responses = []
        start = 0
        for array in arrays:
            end = start + len(array)
            tensor = pb_utils.Tensor(self.output_name, np.ascontiguousarray(outputs[start:end]))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start = end
        return responses
