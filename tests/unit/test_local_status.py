"""Local mode writes the cluster's status: every status it writes validates against the kind's status model.

The supervisor runs here with stand-in processes (a trainer that exits with a given code, an agent
that dies, a monitor that sleeps): what is under test is what it writes, not the workloads.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from scaleml_api.conditions import ACCEPTED, INVALID_SPEC, READY
from scaleml_api.v1alpha1 import DRIFT_MONITOR, KINDS, MODEL_DEPLOYMENT, TRAINING_JOB
from scaleml_api.v1alpha1.driftmonitor import MONITOR_RUNNING, RETRAINING, TRAINING_JOB_RUNNING
from scaleml_api.v1alpha1.modeldeployment import (
    DEGRADED,
    GATE_FAILED,
    NO_READY_REPLICA,
    PROMOTED,
    REPLICAS_READY,
    SERVER_CRASHING,
    WAITING_FOR_MODEL,
)
from scaleml_api.v1alpha1.trainingjob import FAILED, JOB_FAILED, RUNNING, SUCCEEDED, SUSPENDED
from scaleml_local import status
from scaleml_local.commands import age, go_number, rows
from scaleml_local.demo import MANIFESTS
from scaleml_local.state import LocalError, Manifest, State, read_manifests
from scaleml_local.supervisor import Supervisor
from scaleml_operator.status.conditions import find_condition
from tests.support.invalid_specs import CASES, InvalidCase
from tests.support.manifests import merged
from tests.support.polling import wait_for

NAME_CASES = [case for case in CASES if case.field == "metadata.name"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


def _exit(code: int) -> list[str]:
    return [sys.executable, "-c", f"raise SystemExit({code})"]


class StandIns(Supervisor):
    """The supervisor, running a stand-in command for each role instead of the workload."""

    def __init__(self, state: State, roles: Mapping[str, list[str]]) -> None:
        super().__init__(state)
        self.roles = dict(roles)

    def _spawn(self, key: str, role: str, command: list[str], env: Mapping[str, str] | None = None) -> Any:
        return super()._spawn(key, role, self.roles[role], env)


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(tmp_path / "state")


@pytest.fixture
def supervisors() -> Iterator[list[StandIns]]:
    started: list[StandIns] = []
    yield started
    for supervisor in started:
        supervisor.shutdown()


def _supervise(state: State, supervisors: list[StandIns], **roles: list[str]) -> StandIns:
    supervisor = StandIns(state, {"trainer": _exit(0), "agent": SLEEP, "monitor": SLEEP, **roles})
    supervisors.append(supervisor)
    return supervisor


def _example(kind: str, changes: Manifest | None = None) -> Manifest:
    document = next(d for d in read_manifests([MANIFESTS]) if d["kind"] == kind)
    return merged(document, changes or {})


def _valid(state: State) -> dict[str, dict[str, Any]]:
    """Every object's status (both files, as `scaleml local get` shows it), each validated by its kind's model."""
    found = {}
    for kind in KINDS:
        for manifest in state.objects(kind):
            kind.status.model_validate(manifest["status"])
            found[f"{kind.plural}/{manifest['metadata']['name']}"] = manifest["status"]
    return found


def _condition(found: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return find_condition(found.get("conditions") or (), type_) or {}


def _exited(supervisor: Supervisor, key: str) -> bool:
    return all(process.poll() is not None for process in supervisor.groups[key].processes.values())


@pytest.mark.parametrize(("code", "phase", "condition"), [(0, "Succeeded", SUCCEEDED), (3, "Failed", FAILED)])
def test_a_training_job_writes_valid_statuses_while_it_runs_and_when_it_ends(
    state: State, supervisors: list[StandIns], code: int, phase: str, condition: str
) -> None:
    supervisor = _supervise(state, supervisors, trainer=_exit(code))
    state.apply(_example("TrainingJob"))
    state.workload_status_file(TRAINING_JOB, "cancer").patch({"modelVersion": 1})

    supervisor.reconcile()
    running = _valid(state)["trainingjobs/cancer"]
    assert running["phase"] == "Running"
    assert _condition(running, RUNNING)["status"] == "True"
    assert _condition(running, ACCEPTED)["status"] == "True"

    wait_for(lambda: _exited(supervisor, "trainingjobs/cancer"), 30, "the trainer to exit")
    supervisor.reconcile()
    ended = _valid(state)["trainingjobs/cancer"]
    assert ended["phase"] == phase
    assert _condition(ended, condition)["status"] == "True"
    assert _condition(ended, RUNNING)["status"] == "False"
    if code:
        assert _condition(ended, FAILED)["reason"] == JOB_FAILED
        assert "torchrun exited with code 3" in _condition(ended, FAILED)["message"]


def test_the_trainer_gets_the_literal_variables_of_spec_env(
    state: State, supervisors: list[StandIns], tmp_path: Path
) -> None:
    seen = tmp_path / "environ.json"
    dump = f"import json, os; open({str(seen)!r}, 'w').write(json.dumps(dict(os.environ)))"
    supervisor = _supervise(state, supervisors, trainer=[sys.executable, "-c", dump])
    env = [
        {"name": "DATASET_REVISION", "value": "2026-11"},
        {"name": "PYTHONUNBUFFERED", "value": "0"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
    ]
    state.apply(_example("TrainingJob", {"spec": {"env": env}}))
    supervisor.reconcile()
    wait_for(lambda: _exited(supervisor, "trainingjobs/cancer"), 30, "the trainer to exit")
    environ = json.loads(seen.read_text())
    assert (environ["DATASET_REVISION"], environ["PYTHONUNBUFFERED"]) == ("2026-11", "0")
    # Nothing to read a Secret from without a cluster: left unset, and the status says so.
    assert "HF_TOKEN" not in environ
    running = _condition(_valid(state)["trainingjobs/cancer"], RUNNING)
    assert "Not set locally (valueFrom): HF_TOKEN." in running["message"]


def test_a_suspended_training_job_writes_a_valid_status(state: State, supervisors: list[StandIns]) -> None:
    state.apply(_example("TrainingJob", {"spec": {"runPolicy": {"suspend": True}}}))
    _supervise(state, supervisors).reconcile()
    suspended = _valid(state)["trainingjobs/cancer"]
    assert suspended["phase"] == "Suspended"
    assert _condition(suspended, SUSPENDED)["status"] == "True"


@pytest.mark.parametrize("case", NAME_CASES, ids=lambda c: c.id)
def test_local_apply_refuses_the_names_the_api_server_refuses(state: State, case: InvalidCase) -> None:
    manifest = _example(case.kind, case.changes)
    with pytest.raises(LocalError, match=r"metadata\.name"):
        state.apply(manifest)


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/absolute", "a/b", "..", "Claims"])
def test_a_claim_name_cannot_reach_a_folder_outside_the_state(state: State, name: str) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}}
    with pytest.raises(LocalError, match=r"metadata\.name"):
        state.apply(claim)
    # Nor through a spec that names it (the models refuse such names too; this is the folder's own check).
    with pytest.raises(LocalError, match=r"metadata\.name"):
        state.volume(name)
    assert not (state.root.parent / "escaped").exists()


def test_an_invalid_spec_is_reported_as_the_operator_does(state: State, supervisors: list[StandIns]) -> None:
    state.apply(_example("TrainingJob"))
    # A hand-edited object: `scaleml local apply` would have refused it.
    stored = state.root / "objects" / TRAINING_JOB.plural / "cancer.yaml"
    manifest = yaml.safe_load(stored.read_text())
    manifest["spec"]["model"]["params"]["hiddenSizes"] = ["x"]
    stored.write_text(yaml.safe_dump(manifest))

    supervisor = _supervise(state, supervisors)
    supervisor.reconcile()
    rejected = _valid(state)["trainingjobs/cancer"]
    assert (_condition(rejected, ACCEPTED)["status"], _condition(rejected, ACCEPTED)["reason"]) == (
        "False",
        INVALID_SPEC,
    )
    assert "hiddenSizes" in _condition(rejected, ACCEPTED)["message"]
    assert supervisor.groups == {}


def test_serving_monitoring_and_retraining_write_valid_statuses(state: State, supervisors: list[StandIns]) -> None:
    supervisor = _supervise(state, supervisors, agent=_exit(1))
    for kind in ("TrainingJob", "ModelDeployment", "DriftMonitor"):
        state.apply(_example(kind))
    supervisor.reconcile()
    waiting = _valid(state)["modeldeployments/cancer"]
    assert waiting["phase"] == "Pending"
    assert _condition(waiting, READY)["reason"] == WAITING_FOR_MODEL

    # The demo's ModelDeployment has promotion gates (minMetric 0.85): a worse version is held back.
    trainer = state.workload_status_file(TRAINING_JOB, "cancer")
    trainer.patch({"modelVersion": 1, "evaluation": {"metric": "accuracy", "metrics": {"accuracy": 0.5}}})
    wait_for(lambda: _exited(supervisor, "trainingjobs/cancer"), 30, "the trainer to exit")
    supervisor.reconcile()
    held = _valid(state)["modeldeployments/cancer"]
    assert (held["phase"], held["candidateVersion"]) == ("Pending", 1)
    assert _condition(held, READY)["reason"] == GATE_FAILED
    assert _condition(held, PROMOTED)["message"].startswith("Version 1 failed: minMetric: accuracy 0.5 < 0.85.")
    assert "modeldeployments/cancer" not in supervisor.groups

    trainer.patch({"evaluation": {"metric": "accuracy", "metrics": {"accuracy": 0.97}}})
    supervisor.reconcile()
    wait_for(lambda: _exited(supervisor, "modeldeployments/cancer"), 30, "the agent to die")
    supervisor.reconcile()
    found = _valid(state)
    assert found["modeldeployments/cancer"]["phase"] == "Failed"
    assert _condition(found["modeldeployments/cancer"], DEGRADED)["reason"] == SERVER_CRASHING
    assert found["driftmonitors/cancer"]["referenceVersion"] == 1
    assert _condition(found["driftmonitors/cancer"], READY)["reason"] == MONITOR_RUNNING

    # Two drifted windows in a row: the retraining policy (after: 2) creates a TrainingJob.
    state.workload_status_file(DRIFT_MONITOR, "cancer").patch(
        {
            "lastCheckTime": "2026-01-01T00:00:10Z",
            "driftDetected": True,
            "driftScore": 0.9,
            "driftSince": "2026-01-01T00:00:05Z",
            "driftedFeatures": ["mean_radius"],
            "windowSize": 300,
            "consecutiveDriftedWindows": 2,
        }
    )
    supervisor.reconcile()
    monitor = _valid(state)["driftmonitors/cancer"]
    retrain_job = monitor["lastRetrainJob"]
    assert retrain_job.startswith("cancer-retrain-")
    assert monitor["retrainsTriggered"] == 1
    assert _condition(monitor, RETRAINING)["reason"] == TRAINING_JOB_RUNNING
    assert state.get(TRAINING_JOB, retrain_job) is not None
    supervisor.reconcile()
    assert _valid(state)[f"trainingjobs/{retrain_job}"]["phase"] == "Running"


def test_a_served_model_writes_a_valid_status() -> None:
    # Triton's part of a ModelDeployment, which the stand-ins above do not reach.
    now = datetime.now(UTC)
    endpoints = {"http": "http://127.0.0.1:8000", "grpc": "127.0.0.1:8001"}
    loading = status.serving({}, "Progressing", NO_READY_REPLICA, "Triton loads the model.", now=now, replicas=1)
    ready = status.serving(
        loading,
        "Ready",
        REPLICAS_READY,
        "Version 1 served.",
        now=now,
        servedVersion=1,
        replicas=1,
        readyReplicas=1,
        endpoints=endpoints,
    )
    for written in (loading, ready):
        MODEL_DEPLOYMENT.status.model_validate(written)
    assert _condition(ready, READY)["status"] == "True"


def test_the_status_models_refuse_a_field_they_do_not_have() -> None:
    # What the check above rests on: a field of no status model (local mode once wrote `message`) is refused.
    with pytest.raises(ValidationError, match="message"):
        TRAINING_JOB.status.model_validate({"phase": "Running", "message": "2 processes on the CPU."})


@pytest.mark.parametrize(
    ("seconds", "shown"),
    # What kubectl get prints (apimachinery's HumanDuration), at each change of form.
    [
        *[(0, "0s"), (119, "119s"), (180, "3m"), (599, "9m59s"), (3900, "65m"), (10800, "3h"), (19800, "5h30m")],
        *[(28800, "8h"), (273600, "3d4h"), (691200, "8d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y")],
    ],
)
def test_ages_are_printed_as_kubectl_prints_them(seconds: int, shown: str) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert age((now - timedelta(seconds=seconds)).isoformat(), now) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    # Go's %v of a float64, and a whole number as the integer the API machinery decodes it as.
    [
        *[(2.0, "2"), (0.123456789, "0.123456789"), (1234567.5, "1.2345675e+06"), (0.00001234, "1.234e-05")],
        *[(999999.5, "999999.5"), (1e21, "1e+21"), (-0.75, "-0.75")],
    ],
)
def test_numbers_are_printed_as_kubectl_prints_them(value: float, shown: str) -> None:
    assert go_number(value) == shown


def test_an_object_is_stored_with_the_defaults_the_api_server_fills_in(state: State) -> None:
    manifest = _example("TrainingJob")
    del manifest["spec"]["resources"]
    state.apply(manifest)
    stored = state.get(TRAINING_JOB, manifest["metadata"]["name"])
    assert stored is not None
    assert (stored["spec"]["resources"]["workers"], stored["spec"]["runPolicy"]["backoffLimit"]) == (1, 3)
    header, body = rows(state, TRAINING_JOB)
    assert body[0][header.index("WORKERS")] == "1"
