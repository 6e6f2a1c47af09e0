"""The run's configuration: the `TrainingRun` the operator renders into a ConfigMap's file, or `SCALEML_CONFIG`."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from scaleml_api.runtime import CONFIG_ENV, TrainingRun
from scaleml_workloads.training.errors import InvalidInputError


def load_run(config_file: Path | None = None) -> TrainingRun:
    """The TrainingRun from `config_file` (JSON or YAML; a pod's comes from a ConfigMap) or else `$SCALEML_CONFIG`."""
    if config_file is not None:
        try:
            text = config_file.read_text()
        except OSError as error:
            raise InvalidInputError(f"cannot read the config file {config_file}: {error.strerror}") from None
        origin = str(config_file)
    else:
        text = os.environ.get(CONFIG_ENV, "")
        if not text:
            raise InvalidInputError(f"{CONFIG_ENV} is not set and no --config file was given")
        origin = CONFIG_ENV
    try:
        # YAML is a superset of JSON, so one parser reads both.
        document = yaml.safe_load(text)
        return TrainingRun.model_validate(document)
    except yaml.YAMLError as error:
        raise InvalidInputError(f"{origin} is not valid JSON or YAML: {error}") from None
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
        raise InvalidInputError(f"{origin} is not a valid TrainingRun: {problems}") from None


def checkpoint_directory(run: TrainingRun) -> Path | None:
    """Where this run keeps its state (checkpoints, the export marker); None when it does not checkpoint."""
    return Path(run.checkpoint_dir) if run.spec.checkpoint is not None and run.checkpoint_dir else None
