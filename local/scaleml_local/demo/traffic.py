"""The demo's clients: requests drawn from labelled rows, sent to Triton, each answer scored."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import tritonclient.grpc as grpcclient

from scaleml_api.card import ModelCard
from scaleml_api.profile import DataProfile
from scaleml_api.repository import MODEL_CARD_FILE

# The column of the true label (the TrainingJob's data.target).
TARGET: Final = "diagnosis"
# Noise added to resampled rows, as a fraction of each feature's spread: live rows are never exact copies.
NOISE: Final = 0.05


@dataclass(frozen=True)
class Pool:
    """The rows clients draw requests from: the model's inputs and each row's true label."""

    inputs: npt.NDArray[np.float32]
    labels: npt.NDArray[np.str_]
    shifted: bool


@dataclass(frozen=True)
class Score:
    """How many rows a version answered on calm or shifted traffic, and how many of them rightly."""

    version: int
    shifted: bool
    rows: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.rows


def pool(profile: DataProfile, table: pa.Table, *, shifted: bool) -> Pool:
    """The rows of `table` as the model takes them (each feature where the profile says it goes), with their labels."""
    inputs = np.zeros((table.num_rows, *profile.input.dims), dtype=np.float32)
    for feature in profile.features:
        inputs[:, feature.index] = table.column(feature.name).to_numpy()
    return Pool(inputs, np.asarray(table.column(TARGET).to_pylist(), dtype=np.str_), shifted)


class Traffic(threading.Thread):
    """Clients calling Triton over gRPC at a steady rate.

    Counts answers by version, failures, and right answers by version and traffic.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        models: Path,
        profile: DataProfile,
        pool: Pool,
        *,
        rows_per_request: int,
        requests_per_second: float,
    ) -> None:
        super().__init__(name="traffic", daemon=True)
        # `model` is the name Triton serves, `models` the directory of its versions (their cards).
        self.endpoint, self.model, self.models, self.profile = endpoint, model, models, profile
        self.rows_per_request, self.interval = rows_per_request, 1.0 / requests_per_second
        # Swapped whole by the demo when the traffic shifts: a request never mixes two pools.
        self.pool = pool
        self.stop = threading.Event()
        self.served = self.failed = self.unscored = 0
        self.by_version: Counter[str] = Counter()
        self.rows: Counter[tuple[int, bool]] = Counter()
        self.correct: Counter[tuple[int, bool]] = Counter()
        self.last_error = ""
        self.rng = np.random.default_rng(11)
        self._cards: dict[int, ModelCard] = {}

    def _card(self, version: int) -> ModelCard:
        """The card of the version that answered: its labels decode the output (each version has its own)."""
        if version not in self._cards:
            path = self.models / str(version) / MODEL_CARD_FILE
            self._cards[version] = ModelCard.model_validate_json(path.read_text())
        return self._cards[version]

    def _score(self, version: int, pool: Pool, picks: npt.NDArray[np.int64], result: Any) -> None:
        card = self._card(version)
        logits = result.as_numpy(card.outputs[0].name)
        predicted = np.asarray([str(label) for label in card.labels], dtype=np.str_)[logits.argmax(axis=1)]
        self.rows[version, pool.shifted] += len(picks)
        self.correct[version, pool.shifted] += int((predicted == pool.labels[picks]).sum())

    def scores(self) -> list[Score]:
        return [Score(v, shifted, rows, self.correct[v, shifted]) for (v, shifted), rows in sorted(self.rows.items())]

    def run(self) -> None:
        client = grpcclient.InferenceServerClient(self.endpoint)
        name = self.profile.input.name
        while not self.stop.is_set():
            started = time.monotonic()
            pool = self.pool
            picks = self.rng.integers(len(pool.inputs), size=self.rows_per_request)
            rows = pool.inputs[picks]
            batch = (rows + self.rng.normal(0, NOISE, rows.shape) * pool.inputs.std(axis=0)).astype(np.float32)
            tensor = grpcclient.InferInput(name, list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            try:
                result = client.infer(self.model, [tensor])
                version = result.get_response(as_json=True)["model_version"]
                self.by_version[str(version)] += 1
                self.served += 1
            except Exception as error:
                # Every failure counts: the demo promises none across the rollout.
                self.failed += 1
                self.last_error = str(error)
            else:
                try:
                    self._score(int(version), pool, picks, result)
                except Exception as error:
                    # The request succeeded; a broken score must not stop the traffic, but it ends the demo.
                    self.unscored += 1
                    self.last_error = f"scoring an answer of version {version}: {error!r}"
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        client.close()
