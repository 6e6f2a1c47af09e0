"""One training job from a worker's point of view: check, join the group, train, and (rank 0) export."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from scaleml_api.card import DataSummary, EpochMetrics, Metrics, TrainingSummary
from scaleml_api.evaluation import Evaluation, EvaluationSummary
from scaleml_api.runtime import TrainingRun
from scaleml_workloads.atomic import write_text_atomically
from scaleml_workloads.export.formats import INPUT_NAME
from scaleml_workloads.export.version import export_version, tensor_spec
from scaleml_workloads.kubeapi import status_sink
from scaleml_workloads.training import distributed
from scaleml_workloads.training.baselines import baselines
from scaleml_workloads.training.calibration import validation_calibration
from scaleml_workloads.training.config import checkpoint_directory
from scaleml_workloads.training.data import TrainingData, file_sha256, split_rows
from scaleml_workloads.training.distributed import Topology
from scaleml_workloads.training.errors import InvalidInputError
from scaleml_workloads.training.evaluation import evaluate, positive_index
from scaleml_workloads.training.importance import with_importance
from scaleml_workloads.training.inference import predict
from scaleml_workloads.training.loop import TrainingResult, train
from scaleml_workloads.training.models import build_model, warm_start
from scaleml_workloads.training.profile import profile_data
from scaleml_workloads.training.report import ProgressReporter

log = logging.getLogger(__name__)

# In the checkpoint directory: the version this run exported, so that a restart does not export again.
EXPORTED_MARKER = "exported.json"
# Rows of real data the export traces the model with and checks the formats on.
_EXAMPLE_ROWS = 8


def check(run: TrainingRun, data: TrainingData) -> None:
    """What else can fail on bad input before training, once the data is read: the model and its warm start."""
    train_rows, _ = split_rows(data.rows, run.spec.data.validation_split, run.spec.hyperparameters.seed)
    if run.spec.model.task == "classification":
        try:
            positive_index(data.labels, run.spec.evaluation.positive_label)
        except ValueError as error:
            raise InvalidInputError(str(error)) from None
    model = build_model(run.spec.model, data, train_rows)
    warm_start(model, run.spec.model, Path(run.output_dir), run.spec.output.model_name)


def previous_export(run: TrainingRun) -> int | None:
    """The version this run exported already, if a worker was stopped between export and exit."""
    directory = checkpoint_directory(run)
    if directory is None or not (directory / EXPORTED_MARKER).exists():
        return None
    return int(json.loads((directory / EXPORTED_MARKER).read_text())["modelVersion"])


def _record_export(run: TrainingRun, version: int) -> None:
    directory = checkpoint_directory(run)
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomically(directory / EXPORTED_MARKER, json.dumps({"modelVersion": version}))


def run_job(run: TrainingRun, data: TrainingData) -> int | None:
    """Train as one rank of the group; rank 0 exports and returns the new version, the others None."""
    done = previous_export(run)
    if done is not None:
        # Training again would export the same model as a second version.
        log.info("this run exported version %d already; nothing left to do", done)
        return done if int(os.environ.get("RANK", "0")) == 0 else None
    topology = distributed.join()
    try:
        log.info(
            "rank %d of %d on %s; %d rows, sample shape %s",
            topology.rank,
            topology.world_size,
            topology.device,
            data.rows,
            data.sample_shape,
        )
        patcher = (
            status_sink(run.status_file, run.namespace, "trainingjobs", run.name)
            if run.report_status and topology.leader
            else None
        )
        reporter = ProgressReporter(patcher, leader=topology.leader, metrics_port=run.metrics_port)
        result = train(run, data, topology, reporter)
        version: int | None = None
        failure: BaseException | None = None
        if topology.leader:
            try:
                version, evaluation = export_result(run, data, result, topology)
                _record_export(run, version)
                reporter.finish(version, evaluation)
            except BaseException as error:  # re-raised below, once every rank has met
                failure = error
        # Every rank leaves the group together, after the export: a rank that tears the group down
        # while the leader still exports can abort the leader's side of it (gloo), or hang it.
        distributed.broadcast(version)
        if failure is not None:
            raise failure
        return version
    finally:
        distributed.leave()


def training_mean(data: TrainingData, rows: npt.NDArray[np.int64]) -> torch.Tensor | None:
    """The explanations' baseline: the mean training row (missing values left out), None for token ids."""
    if data.tokens or not len(rows):
        return None
    # At most 100,000 rows: the mean of a larger sample moves less than float32 can show.
    chosen = rows[:: max(1, len(rows) // 100_000)]
    with warnings.catch_warnings():
        # A column missing in every chosen row has no mean: its baseline is 0, as the model imputes it.
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(data.features[chosen].astype(np.float64), axis=0)
    return torch.from_numpy(np.nan_to_num(mean).astype(np.float32))


def evaluation_of(
    run: TrainingRun, data: TrainingData, result: TrainingResult, device: torch.device
) -> Evaluation | None:
    """The trained model's evaluation on the validation rows, with the earlier versions on the same rows.

    None without validation rows: there is nothing to judge the model on.
    """
    spec, rows = run.spec, result.validation_rows
    if not len(rows):
        return None
    outputs = predict(result.model, torch.from_numpy(data.features[rows]), device).numpy()
    groups = {name: values[rows] for name, values in data.groups.items()}
    evaluation = evaluate(
        spec.model.task,
        data.target[rows],
        outputs,
        data.labels,
        groups,
        spec.evaluation,
        seed=spec.hyperparameters.seed,
    )
    model_dir = Path(run.output_dir) / spec.output.model_name
    earlier = baselines(model_dir, spec.evaluation.compare_versions, data, rows, evaluation.positive_label, device)
    return evaluation.model_copy(update={"baselines": earlier})


def export_result(
    run: TrainingRun, data: TrainingData, result: TrainingResult, topology: Topology
) -> tuple[int, EvaluationSummary | None]:
    """Export the trained model with its model card, evaluation and the data's reference profile.

    Returns the version and the evaluation's summary for the status.
    """
    spec = run.spec
    rows = np.arange(max(2, min(_EXAMPLE_ROWS, data.rows))) % data.rows
    example = torch.from_numpy(data.features[rows])
    sha256 = file_sha256(data.source)
    profile = profile_data(
        data,
        spec.data,
        spec.model.task,
        sha256,
        tensor_spec(INPUT_NAME, example),
        spec.hyperparameters.seed,
        sample=spec.output.profile_sample,
    )
    # What the model relies on and how far its confidence can be trusted, both measured on the validation rows.
    seed, device, held_out = spec.hyperparameters.seed, topology.device, result.validation_rows
    profile = with_importance(
        profile, result.model, data.features, data.target, held_out, spec.model.task, seed=seed, device=device
    )
    if spec.model.task == "classification":
        calibration = validation_calibration(
            result.model, data.features, data.target, held_out, seed=seed, device=device
        )
        profile = profile.model_copy(update={"calibration": calibration})
    history = [EpochMetrics.model_validate(entry) for entry in result.progress.history]
    training = TrainingSummary(
        job=f"{run.namespace}/{run.name}",
        task=spec.model.task,
        architecture=spec.model.architecture,
        params=spec.model.params,
        entrypoint=spec.model.entrypoint,
        hyperparameters=spec.hyperparameters,
        precision=spec.precision,
        parent=result.parent,
        data=DataSummary(
            source=spec.data.source,
            format=spec.data.format,
            sha256=sha256,
            rows=data.rows,
            training_rows=len(result.train_rows),
            validation_rows=len(result.validation_rows),
            target=data.target_name,
            features=list(data.feature_names),
            categories={name: list(values) for name, values in data.categories.items()},
        ),
        metrics=Metrics(
            validation_metric_name="accuracy" if spec.model.task == "classification" else "rmse",
            loss=result.loss,
            validation_metric=result.validation_metric,
            history=history,
            feature_importance={
                feature.name: feature.importance for feature in profile.features if feature.importance is not None
            },
            calibration=profile.calibration,
        ),
        world_size=topology.world_size,
        device=topology.device.type,
        steps=result.progress.step,
        started=result.started,
        finished=result.finished,
        training_seconds=round(result.seconds, 3),
    )
    evaluation = evaluation_of(run, data, result, device)
    version = export_version(
        Path(run.output_dir),
        spec.output.model_name,
        result.model,
        example,
        formats=spec.output.formats,
        training=training,
        labels=data.labels,
        profile=profile,
        evaluation=evaluation,
        intended_use=spec.evaluation.intended_use,
        baseline=training_mean(data, result.train_rows),
        lineage=run.lineage,
    )
    return version, EvaluationSummary.of(evaluation) if evaluation is not None else None
