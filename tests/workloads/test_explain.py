"""Explanations served by a real Triton: integrated gradients equal Captum's, and add up to the prediction's change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from captum.attr import IntegratedGradients

from scaleml_api.repository import EXPLAIN_DIR
from tests.workloads.runs import MODEL_NAME
from tests.workloads.serving import feature_batch, serving_run, triton

pytestmark = [pytest.mark.workloads, pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]

# float32 sums over 50 points, in another order than Captum's.
CAPTUM_TOLERANCE = 1e-5


def test_triton_serves_attributions_that_equal_captums_and_add_up(exported_model: Path, tmp_path: Path) -> None:
    batch = feature_batch(32, seed=3)
    with triton(serving_run(exported_model, tmp_path, {"explain": {"enabled": True}}), tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http)
        tensor = httpclient.InferInput("INPUT__0", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        served = client.infer(f"{MODEL_NAME}-explain", [tensor]).as_numpy("ATTRIBUTIONS")
        # The model itself is served as before, beside its explanations.
        logits = client.infer(MODEL_NAME, [tensor]).as_numpy("OUTPUT__0")

    model = torch.jit.load(str(exported_model / "1" / "model.pt")).eval()  # type: ignore[no-untyped-call]
    explainer = torch.jit.load(str(exported_model / "1" / EXPLAIN_DIR / "model.pt"))  # type: ignore[no-untyped-call]
    baseline = explainer.baseline
    inputs = torch.from_numpy(batch)
    predicted = torch.from_numpy(np.array(logits)).argmax(dim=1)
    reference = IntegratedGradients(model).attribute(
        inputs, baselines=baseline, target=predicted, n_steps=50, method="gausslegendre"
    )
    assert served.shape == batch.shape
    np.testing.assert_allclose(served, reference.detach().numpy(), rtol=CAPTUM_TOLERANCE, atol=CAPTUM_TOLERANCE)

    # Completeness: the attributions of a row add up to the explained logit's change from the baseline.
    with torch.no_grad():
        change = (
            model(inputs).gather(1, predicted[:, None])[:, 0]
            - model(baseline).expand(len(batch), -1).gather(1, predicted[:, None])[:, 0]
        )
    error = np.abs(served.sum(axis=1) - change.numpy())
    print(
        f"completeness error: max {error.max():.3g}, median {np.median(error):.3g}, change {np.abs(change).mean():.3g}"
    )
    assert error.max() <= 0.05 * max(1.0, float(np.abs(change).max()))
