"""`scaleml local` and the API server, fed the same YAML file: both accept it, or both refuse it naming the same fields.

The server side is `kubectl apply --dry-run=server`, the local side `scaleml local apply`'s own
validation (`commands.apply`); each case is one file, read by both as it is written.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from scaleml_api.validation import admitted
from scaleml_local import commands
from scaleml_local.state import LocalError, State, kind_named
from tests.support.kubectl import Kubectl

pytestmark = pytest.mark.apiserver

TJ, MD, DM = "TrainingJob", "ModelDeployment", "DriftMonitor"
# Spec lines every case starts from; a case's own lines come after them, and a key it repeats replaces the base's.
BASE_SPECS = {
    TJ: "data: {source: churn/train.parquet, volumeClaim: datasets, target: churned}\n"
    "output: {volumeClaim: models, modelName: churn}",
    MD: "model: {fromTrainingJob: churn}",
    DM: "target: {modelDeployment: churn}\nreference: {fromTrainingJob: churn}",
}
DATA = "data: {source: churn/train.parquet, volumeClaim: datasets, target: churned, features: %s}"
DATA_TARGET = "data: {source: churn/train.parquet, volumeClaim: datasets, target: %s}"
CAPTURE = "capture: {enabled: true, volumeClaim: captures, retention: {maxAge: %s}}"
OUTPUT = "output: {volumeClaim: models, modelName: churn, formats: %s}"


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    # YAML lines of the spec, or with `whole` the lines of the object after its metadata.
    lines: str
    # What both messages must say, field first ("spec.resources.workers:"); empty: both accept.
    refused: str = ""
    whole: bool = False

    def text(self) -> str:
        body = self.lines if self.whole else "spec:\n" + textwrap.indent(f"{BASE_SPECS[self.kind]}\n{self.lines}", "  ")
        return f"apiVersion: scaleml.dev/v1alpha1\nkind: {self.kind}\nmetadata:\n  name: churn\n{body}\n"


CASES = (
    # Strings are not numbers or booleans, a fraction is not a quantity, but a whole number is an integer
    # however YAML writes it (the API server decodes 2.0 and 1e3 from kubectl's JSON as integers).
    Case("workers-quoted", TJ, 'resources: {workers: "2"}', "spec.resources.workers:"),
    Case("suspend-quoted", TJ, 'runPolicy: {suspend: "true"}', "spec.runPolicy.suspend:"),
    Case("learning-rate-quoted", TJ, 'hyperparameters: {learningRate: "0.01"}', "spec.hyperparameters.learningRate:"),
    Case("cpu-fraction-as-number", TJ, "resources: {cpu: 0.5}", "spec.resources.cpu:"),
    Case("cpu-fraction-as-string", TJ, 'resources: {cpu: "0.5"}'),
    Case("cpu-whole-float", MD, "resources: {cpu: 2.0}"),
    Case("cpu-boolean", MD, "resources: {cpu: true}", "spec.resources.cpu:"),
    Case("cpu-largest-integer", TJ, "resources: {cpu: 9223372036854775807}"),
    Case("cpu-string-below-int64-max", TJ, 'resources: {cpu: "9223372036854775806"}'),
    Case("cpu-string-at-int64-max", TJ, 'resources: {cpu: "9223372036854775807"}', "spec.resources.cpu:"),
    Case("workers-whole-float", TJ, "resources: {workers: 2.0}"),
    Case("workers-fraction", TJ, "resources: {workers: 2.5}", "spec.resources.workers:"),
    Case("learning-rate-exponent", TJ, "hyperparameters: {learningRate: 1e-3}"),
    Case("epochs-exponent", TJ, "hyperparameters: {epochs: 1e3}"),
    Case("seed-octal", TJ, "hyperparameters: {seed: 0o17}"),
    Case("seed-underscores", TJ, "hyperparameters: {seed: 1_000}"),
    Case(
        "every-steps-beyond-int64",
        TJ,
        "checkpoint: {volumeClaim: c, everySteps: 9223372036854775808}",
        "spec.checkpoint.everySteps:",
    ),
    Case("version-fraction", MD, "model: {fromTrainingJob: churn, version: 2.5}", "spec.model.version:"),
    Case("version-whole-float", MD, "model: {fromTrainingJob: churn, version: 3.0}"),
    # Plain scalars as kubectl's YAML parser reads them, which is not as PyYAML does.
    Case("target-y-is-a-boolean", TJ, DATA_TARGET % "y", "spec.data.target:"),
    Case("env-on-is-a-boolean", TJ, "env: [{name: FLAG, value: on}]", "spec.env[0].value:"),
    Case("env-date-is-a-string", TJ, "env: [{name: RELEASE, value: 2024-01-01}]"),
    Case("env-sexagesimal-is-a-string", TJ, "env: [{name: WINDOW, value: 1:30}]"),
    Case("node-selector-numeric-key", TJ, "scheduling: {nodeSelector: {1: a, true: b}}"),
    # Nulls: the API server drops them from objects (then defaults the field), but not from lists.
    Case("section-null", TJ, "resources: null"),
    Case("fields-null", TJ, "resources: {workers: null, cpu: null}"),
    Case("optional-section-null", TJ, "elastic: null"),
    Case("list-null", TJ, "env: null"),
    Case("env-value-null", TJ, "env: [{name: A, value: null}]"),
    Case("map-value-null", TJ, "scheduling: {nodeSelector: {pool: null}}"),
    Case("free-form-null", TJ, "model: {params: {hiddenSizes: [64], dropout: null}}"),
    Case("null-in-a-list", TJ, DATA % "[age, null]", "spec.data.features[1]:"),
    Case("required-null", TJ, "data: null", "spec.data:"),
    Case("spec-null", DM, "spec: null", "spec:", whole=True),
    Case("spec-empty", DM, "spec: {}", "spec.target:", whole=True),
    # Lists of type set and map: no two items alike (in their keys).
    Case("env-names-twice", TJ, 'env: [{name: A, value: "1"}, {name: A, value: "2"}]', "spec.env[1]:"),
    Case("features-twice", TJ, DATA % "[age, plan, age]", "spec.data.features[2]:"),
    Case("sensitive-twice", TJ, "evaluation: {sensitiveFeatures: [a, a]}", "spec.evaluation.sensitiveFeatures[1]:"),
    Case("formats-twice", TJ, OUTPUT % "[onnx, onnx]", "spec.output.formats[1]:"),
    Case("batch-sizes-twice", MD, "batching: {preferredBatchSizes: [16, 16]}", "spec.batching.preferredBatchSizes[1]:"),
    Case("monitor-features-twice", DM, "features: [age, age]", "spec.features[1]:"),
    Case("env-names-differ", TJ, 'env: [{name: A, value: "1"}, {name: B, value: "1"}]'),
    # Durations: CEL's duration() overflows past 2562047h.
    Case("every-three-999999h", DM, "window: {every: 999999h999999h999999h}", "spec.window.every:"),
    Case("cooldown-three-999999h", DM, "retrain: {cooldown: 999999h999999h999999h}", "spec.retrain.cooldown:"),
    Case("max-age-three-999999h", MD, CAPTURE % "999999h999999h999999h", "spec.capture.retention.maxAge:"),
    Case("max-age-past-go-duration", MD, CAPTURE % "2562048h", "spec.capture.retention.maxAge:"),
    Case("every-longest", DM, "window: {every: 999999h999999m999999s}"),
    Case("every-hours-and-minutes", DM, "window: {every: 1h30m}"),
    Case("every-unit-twice", DM, "window: {every: 5m5m}", "spec.window.every:"),
    Case("max-age-empty", MD, CAPTURE % '""', "spec.capture.retention.maxAge:"),
    # The object around the spec, decoded strictly; a List's items are applied one by one.
    Case(
        "unknown-top-level-field",
        DM,
        "spec: {target: {modelDeployment: churn}, reference: {fromTrainingJob: churn}}\nfoo: 1",
        'unknown field "foo"',
        whole=True,
    ),
)

# A field named in a message: "spec.env[1]: ..." on the local side, "* spec.env[1]: Invalid value" on the server's.
_FIELD = re.compile(r"(?<![\w.\"])(spec(?:\.[A-Za-z]\w*|\[\d+\])*):")


def _server(kubectl: Kubectl, path: Path, namespace: str) -> str:
    result = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    return "" if result.returncode == 0 else result.stderr


def _local(tmp_path: Path, path: Path) -> str:
    try:
        commands.apply(State(tmp_path / "state"), [path])
    except LocalError as error:
        return str(error)
    return ""


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_local_mode_accepts_and_refuses_what_the_api_server_does(
    case: Case, scaleml_installed: Kubectl, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(case.text())
    server, local = _server(scaleml_installed, path, namespace), _local(tmp_path, path)
    if not case.refused:
        assert (server, local) == ("", ""), case.text()
        return
    assert case.refused in server, server
    assert case.refused in local, local
    assert set(_FIELD.findall(local)) == set(_FIELD.findall(server)), (local, server)


def test_a_list_applies_its_items_in_both(scaleml_installed: Kubectl, namespace: str, tmp_path: Path) -> None:
    items = "".join("- " + textwrap.indent(Case("item", kind, "").text(), "  ")[2:] for kind in (TJ, MD))
    path = tmp_path / "list.yaml"
    path.write_text(f"apiVersion: v1\nkind: List\nitems:\n{items}")
    assert _server(scaleml_installed, path, namespace) == ""
    state = State(tmp_path / "state")
    assert commands.apply(state, [path]) == ["trainingjob/churn created", "modeldeployment/churn created"]


def test_free_form_values_reach_local_mode_as_they_reach_the_api_server(
    scaleml_installed: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """A custom model's params keep whatever plain scalar YAML holds, as kubectl reads it, and lose their nulls."""
    params = (
        "{scalars: [y, n, yes, off, ~, 1e3, 1e-3, 0o17, 017, 08, 1_000, 0x1F, +12, .5, .1_0, 1., 2.0, -0.0, 2001-12-14,"
        " 1:30, 12e, 1e400, 9223372036854775808, 1e21, =], dropped: null, kept: 1.5}"
    )
    case = Case("params", TJ, f"model: {{architecture: custom, entrypoint: 'churn.model:build', params: {params}}}")
    path = tmp_path / "params.yaml"
    path.write_text(case.text())
    out = scaleml_installed.run("apply", "--dry-run=server", "-n", namespace, "-f", str(path), "-o", "json").stdout
    # Numbers as the API server decodes them: a whole number within int64 is an integer, any other a float.
    server = json.loads(out, parse_int=lambda text: admitted(int(text)))["spec"]["model"]["params"]
    state = State(tmp_path / "state")
    commands.apply(state, [path])
    stored = state.get(kind_named(TJ), "churn")
    assert stored is not None
    assert stored["spec"]["model"]["params"] == server
