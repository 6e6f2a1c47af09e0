"""Permutation importance at training time: against scikit-learn's, and on data where only known features matter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from sklearn.inspection import permutation_importance as sklearn_permutation_importance
from torch import nn

from scaleml_api.card import ModelCard
from scaleml_api.profile import DataProfile
from scaleml_api.v1alpha1.trainingjob import DataSpec
from scaleml_workloads.export.version import tensor_spec
from scaleml_workloads.training.data import Task, TrainingData
from scaleml_workloads.training.importance import error, permutation_importance, with_importance
from scaleml_workloads.training.profile import profile_data
from tests.workloads.runs import export_churn_model

pytestmark = pytest.mark.workloads

CPU = torch.device("cpu")


def _fitted(features: torch.Tensor, target: torch.Tensor, outputs: int) -> nn.Module:
    """A small MLP trained full-batch on the rows: a real model whose reliance on each feature is learned."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(features.shape[1], 32), nn.ReLU(), nn.Linear(32, outputs))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    loss_of = nn.CrossEntropyLoss() if outputs > 1 else nn.MSELoss()
    for _ in range(300):
        optimiser.zero_grad()
        output = model(features)
        loss = loss_of(output, target) if outputs > 1 else loss_of(output.squeeze(-1), target)
        loss.backward()
        optimiser.step()
    return model.eval()


class _Estimator:
    """The torch model as scikit-learn's permutation_importance calls it: a scorer over numpy rows."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def fit(self, *_: object) -> _Estimator:
        return self


def _scorer(task: Task) -> Callable[[_Estimator, npt.NDArray[np.float32], npt.NDArray[np.generic]], float]:
    # Higher is better for scikit-learn: minus our error, so both importances are the error gained.
    def score(estimator: _Estimator, x: npt.NDArray[np.float32], y: npt.NDArray[np.generic]) -> float:
        with torch.no_grad():
            outputs = estimator.model(torch.from_numpy(np.ascontiguousarray(x)))
        return -error(outputs, torch.from_numpy(y), task)

    return score


def _table(rows: int, seed: int) -> tuple[torch.Tensor, npt.NDArray[np.float64]]:
    """Five features; the target depends on x0 strongly, on x1 less, and on nothing else."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5)).astype(np.float32)
    return torch.from_numpy(x), 2.0 * x[:, 0] + 0.7 * x[:, 1] + 0.2 * rng.normal(size=rows)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_importance_agrees_with_scikit_learn_and_ranks_only_the_features_that_matter(task: Task) -> None:
    # Trained on one draw, measured on another: the validation rows of a real run.
    (train, train_signal), (features, signal) = _table(1500, seed=1), _table(1500, seed=2)
    if task == "classification":
        model = _fitted(train, torch.from_numpy((train_signal > 0).astype(np.int64)), outputs=2)
        target = torch.from_numpy((signal > 0).astype(np.int64))
    else:
        model = _fitted(train, torch.from_numpy(train_signal.astype(np.float32)), outputs=1)
        target = torch.from_numpy(signal.astype(np.float32))
    repeats = 30

    ours = permutation_importance(
        model, features, target, task, [(1, index) for index in range(5)], seed=3, device=CPU, repeats=repeats
    )
    peer = sklearn_permutation_importance(
        _Estimator(model),
        features.numpy(),
        target.numpy(),
        scoring=_scorer(task),
        n_repeats=repeats,
        random_state=5,
    )

    # Two independent sets of shuffles: they agree within the sampling error of their means.
    spread = peer.importances_std / np.sqrt(repeats)
    for index in range(5):
        assert abs(ours[index] - peer.importances_mean[index]) <= 5 * spread[index] + 0.005, (index, ours, peer)
    assert ours[0] > ours[1] > 0.02
    noise = max(abs(value) for value in ours[2:])
    assert noise < 0.1 * ours[1], ours


def _profile(features: npt.NDArray[np.float32] | npt.NDArray[np.int64], target: npt.NDArray[np.int64]) -> DataProfile:
    """The profile training writes for an npz array feature named x with a two-class target."""
    data = TrainingData(Path("train.npz"), features, target, ("x",), {}, (0, 1), "y")
    spec = DataSpec(source="train.npz", volume_claim="datasets", format="npz", target="y")
    model_input = tensor_spec("INPUT__0", torch.from_numpy(features[:2]))
    return profile_data(data, spec, "classification", "0" * 64, model_input, seed=1)


def test_a_channel_of_an_image_is_shuffled_as_a_whole() -> None:
    """`reduction: mean` features: the model reads channel 0 only, so only channel 0 matters."""
    rng = np.random.default_rng(2)
    images = rng.normal(size=(600, 3, 4, 4)).astype(np.float32)
    target = (images[:, 0].mean(axis=(1, 2)) > 0).astype(np.int64)

    class FirstChannel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mean = x[:, 0].mean(dim=(1, 2))
            return torch.stack([-mean, mean], dim=1)

    profile = with_importance(
        _profile(images, target), FirstChannel(), images, target, np.arange(600), "classification", seed=0, device=CPU
    )

    assert [(feature.name, feature.reduction) for feature in profile.features] == [
        ("x[0]", "mean"),
        ("x[1]", "mean"),
        ("x[2]", "mean"),
    ]
    # Shuffling the channel whole leaves about half of the answers right.
    assert profile.features[0].importance == pytest.approx(0.5, abs=0.08)
    assert [feature.importance for feature in profile.features[1:]] == [0.0, 0.0]


def test_token_ids_are_one_pooled_feature_without_importance() -> None:
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 20, size=(300, 8))
    target = (tokens[:, 0] > 9).astype(np.int64)

    class FirstToken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            high = (x[:, 0] > 9).float()
            return torch.stack([1 - high, high], dim=1)

    profile = with_importance(
        _profile(tokens, target), FirstToken(), tokens, target, np.arange(300), "classification", seed=0, device=CPU
    )

    (feature,) = profile.features
    assert (feature.reduction, feature.importance) == ("pool", None)


def test_a_trained_model_records_importance_and_calibration_in_profile_and_card(tmp_path: Path) -> None:
    """churn_table's label depends on a, b, plan and tenure, never on c."""
    version = export_churn_model(tmp_path, "run.json", rows=3000) / "1"

    profile = DataProfile.model_validate_json((version / "profile.json").read_text())
    card = ModelCard.model_validate_json((version / "model_card.json").read_text())
    importance = {feature.name: feature.importance for feature in profile.features}
    assert card.training.metrics.feature_importance == importance
    assert importance["a"] is not None
    assert importance["b"] is not None
    assert importance["c"] is not None
    assert importance["a"] > importance["b"] > 0.05
    assert abs(importance["c"]) < 0.02
    calibration = profile.calibration
    assert calibration is not None
    assert card.training.metrics.calibration == calibration
    assert calibration.rows == card.training.data.validation_rows
    assert calibration.validation_accuracy == pytest.approx(card.training.metrics.validation_metric)
    assert calibration.ece_after <= calibration.ece_before + 0.01
