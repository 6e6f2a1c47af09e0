"""What a DriftMonitor becomes, what it reads, and when and how it retrains."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scaleml_api import runtime
from scaleml_api.conditions import Waiting
from scaleml_api.runtime import MonitorRun
from scaleml_api.v1alpha1 import DRIFT_MONITOR
from scaleml_api.v1alpha1.driftmonitor import DriftMonitorSpec, RetrainPolicy
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_operator.builders import driftmonitor as build
from scaleml_operator.builders import modeldeployment as md_build
from scaleml_operator.builders import retraining
from scaleml_operator.builders.meta import Owner
from scaleml_operator.builders.modeldeployment import ModelSource
from scaleml_operator.builders.retraining import Retraining
from scaleml_operator.status.driftmonitor import drift_condition
from tests.support.manifests import example, merged
from tests.support.retrain_overrides import FORBIDDEN_OVERRIDES

OWNER = Owner("DriftMonitor", "churn", "ml", "9c0d-uid")
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _spec(**changes: Any) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate(merged(example("DriftMonitor"), {"spec": changes})["spec"])


def _deployment(served: int | None = 2, capture: bool = True) -> dict[str, Any]:
    return {
        "spec": {"capture": {"enabled": capture, "volumeClaim": "captures"}},
        "status": {"servedVersion": served} if served else {},
    }


TRAINING_JOB = {"spec": {"output": {"volumeClaim": "models", "modelName": "churn"}}, "status": {"modelVersion": 3}}


def test_the_reference_is_the_profile_of_the_served_version() -> None:
    inputs = build.resolve_inputs(_spec(), _deployment(served=2), TRAINING_JOB)
    assert inputs == build.Inputs("captures", "models", "churn/2/profile.json", 2, "churn")
    # Nothing served yet: the TrainingJob's newest export.
    assert build.resolve_inputs(_spec(), _deployment(served=None), TRAINING_JOB).reference_version == 3  # type: ignore[union-attr]


def test_the_reference_is_the_served_versions_profile_when_the_training_job_is_gone() -> None:
    served = ModelSource("models", "churn", 2)
    assert build.resolve_inputs(_spec(), _deployment(served=3), None, served) == build.Inputs(
        "captures", "models", "churn/3/profile.json", 3, "churn"
    )
    assert build.resolve_inputs(_spec(), _deployment(served=None), None, served).reference_version == 2  # type: ignore[union-attr]


def test_a_profile_given_by_path_is_read_from_its_claim() -> None:
    spec = _spec(reference={"fromTrainingJob": "", "path": "profiles/churn.json", "volumeClaim": "refs"})
    assert build.resolve_inputs(spec, _deployment(), None) == build.Inputs(
        "captures", "refs", "profiles/churn.json", None, None
    )


def test_with_a_profile_by_path_the_monitor_keeps_to_the_model_the_target_serves() -> None:
    spec = _spec(reference={"fromTrainingJob": "", "path": "profiles/churn.json", "volumeClaim": "refs"})
    deployment = merged(_deployment(), {"spec": {"model": {"repository": {"volumeClaim": "m", "modelName": "fraud"}}}})
    assert build.resolve_inputs(spec, deployment, None).model_name == "fraud"  # type: ignore[union-attr]
    served = ModelSource("models", "churn", 2)
    assert build.resolve_inputs(spec, _deployment(), None, served).model_name == "churn"  # type: ignore[union-attr]


def test_the_monitor_reads_the_directory_its_target_s_converters_write_and_only_its_model_s_rows() -> None:
    """Two ModelDeployments, churn and fraud, share the claim `captures`: churn's monitor reads churn's directory."""
    target = Owner("ModelDeployment", "churn", "ml", "md-uid")
    md_spec = ModelDeploymentSpec.model_validate(example("ModelDeployment")["spec"])
    serving = md_build.pod_template(target, md_spec, ModelSource("models", "churn", 2), ("triton", "img"))["spec"]
    writes = next(o for o in serving["initContainers"][1]["command"] if o.startswith("--directory="))
    inputs = build.resolve_inputs(_spec(), _deployment(served=2), TRAINING_JOB)
    assert isinstance(inputs, build.Inputs)
    *_, config_map, deployment = build.children(OWNER, _spec(), inputs, "img").apply
    run = MonitorRun.model_validate_json(config_map["data"]["run.json"])
    assert f"--directory={run.captures_dir}" == writes == "--directory=/captures/churn"
    assert (run.model_name, run.model_version) == ("churn", 2)
    # Until retention has deleted them, the files the layout before wrote at the claim's root are read too.
    assert run.legacy_captures_dir == "/captures"
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["captures"] == {"name": "captures", "mountPath": "/captures", "readOnly": True}
    claims = {v["name"]: v for v in pod["volumes"]}
    assert claims["captures"]["persistentVolumeClaim"] == {"claimName": "captures", "readOnly": True}


def test_without_a_model_to_go_by_the_monitor_leaves_the_claim_s_root_unread() -> None:
    """Rows of every model are at the root: only the model column tells the target's apart."""
    inputs = build.Inputs("captures", "refs", "profiles/churn.json", None, None)
    run = build.monitor_run(OWNER, _spec(), inputs)
    assert (run.captures_dir, run.legacy_captures_dir, run.model_name) == ("/captures/churn", None, None)


@pytest.mark.parametrize(
    ("deployment", "training_job", "reason"),
    [
        (None, TRAINING_JOB, "ModelDeploymentNotFound"),
        (_deployment(capture=False), TRAINING_JOB, "CaptureDisabled"),
        (_deployment(), None, "TrainingJobNotFound"),
        (_deployment(served=None), {"spec": TRAINING_JOB["spec"], "status": {}}, "WaitingForModel"),
    ],
)
def test_the_monitor_waits_for_what_it_needs(
    deployment: dict[str, Any] | None, training_job: dict[str, Any] | None, reason: str
) -> None:
    waiting = build.resolve_inputs(_spec(), deployment, training_job)
    assert isinstance(waiting, Waiting)
    assert waiting.reason == reason
    assert [c["kind"] for c in build.children(OWNER, _spec(), None, "img").apply] == [
        "ServiceAccount",
        "RoleBinding",
        "Service",
    ]


def test_the_monitor_pod_is_restricted_reads_read_only_and_reports_as_itself() -> None:
    inputs = build.Inputs("captures", "models", "churn/2/profile.json", 2, "churn")
    *_, config_map, deployment = build.children(OWNER, _spec(), inputs, "img").apply
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert all("sizeLimit" in volume["emptyDir"] for volume in pod["volumes"] if "emptyDir" in volume)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == ("void", "")
    assert all(m["readOnly"] for m in container["volumeMounts"] if m["name"] in ("captures", "reference"))
    assert container["command"][-2:] == ["--config", "/etc/scaleml/run.json"]
    run = MonitorRun.model_validate_json(config_map["data"]["run.json"])
    assert (run.profile_path, run.model_version, run.name) == ("/reference/churn/2/profile.json", 2, "churn")
    account, binding = build.identity(OWNER)
    assert pod["serviceAccountName"] == account["metadata"]["name"] == "churn-monitor"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "scaleml-monitor-status",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "churn-monitor", "namespace": "ml"}]


def _monitor_template(**changes: Any) -> dict[str, Any]:
    inputs = build.Inputs("captures", "models", "churn/2/profile.json", 2, "churn")
    template: dict[str, Any] = build.deployment(OWNER, _spec(**changes), inputs, "img")["spec"]["template"]
    return template


@pytest.mark.parametrize(
    "retrain",
    [
        {"cooldown": "12h"},
        {"enabled": False},
        {"after": 10, "when": "either"},
        {"trainingJobOverrides": {"hyperparameters": {"epochs": 5}}},
    ],
)
def test_the_retraining_policy_does_not_restart_the_monitor(retrain: dict[str, Any]) -> None:
    """Only the operator reads spec.retrain; a restart of the (Recreate) monitor would leave a gap."""
    inputs = build.Inputs("captures", "models", "churn/2/profile.json", 2, "churn")
    assert _monitor_template(retrain=retrain) == _monitor_template()
    config = build.run_config(OWNER, _spec(retrain=retrain), inputs).config_map(OWNER, build.COMPONENT)
    assert MonitorRun.model_validate_json(config["data"]["run.json"]).spec.retrain == RetrainPolicy()


def test_what_the_monitor_reads_restarts_it() -> None:
    assert _monitor_template(window={"every": "1m"}) != _monitor_template()
    assert _monitor_template(thresholds={"pValue": 0.05}) != _monitor_template()


def test_the_same_interval_spelled_otherwise_does_not_restart_the_monitor() -> None:
    assert _monitor_template(window={"every": "300s"}) == _monitor_template(window={"every": "5m"})
    assert _monitor_template(window={"every": "90m"}) == _monitor_template(window={"every": "1h30m"})


def _status(windows: int, **extra: Any) -> dict[str, Any]:
    return {
        "driftDetected": True,
        "consecutiveDriftedWindows": windows,
        "driftSince": "2026-11-23T10:00:00Z",
        **extra,
    }


POLICY = RetrainPolicy(enabled=True, after=3, cooldown="2h")


def test_retraining_waits_for_persistent_drift() -> None:
    assert retraining.decide(POLICY, _status(2), [], NOW).reason == "DriftNotPersistent"
    assert retraining.decide(POLICY, {"driftDetected": False}, [], NOW).reason == "NoDrift"
    assert retraining.decide(POLICY.model_copy(update={"enabled": False}), _status(9), [], NOW).reason == "Disabled"
    assert retraining.decide(POLICY, _status(3), [], NOW).create


def _retrained(created: datetime, *, finished: bool) -> retraining.Retrained:
    metadata = {"name": "churn-retrain-1", "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return retraining.Retrained({"metadata": metadata}, finished)


def test_no_retraining_while_one_runs_or_within_the_cooldown() -> None:
    running = [_retrained(NOW - timedelta(hours=5), finished=False)]
    assert retraining.decide(POLICY, _status(5), running, NOW).reason == "RetrainRunning"
    recent = [_retrained(NOW - timedelta(minutes=30), finished=True)]
    cooling = retraining.decide(POLICY, _status(5), recent, NOW)
    assert (cooling.create, cooling.reason) == (False, "CooldownActive")
    assert "ends at 2026-11-23T13:30:00Z" in cooling.message
    # The message does not change as time passes: each status write re-runs the decision.
    assert retraining.decide(POLICY, _status(6), recent, NOW + timedelta(minutes=5)) == cooling
    # Nothing the monitor writes into the status moves the cooldown.
    assert retraining.decide(POLICY, _status(5, lastRetrainTime="2026-01-01T00:00:00Z"), recent, NOW) == cooling
    old = [_retrained(NOW - timedelta(hours=3), finished=True)]
    assert retraining.decide(POLICY, _status(5), old, NOW).create


def test_the_job_name_follows_the_last_job_and_fits_the_kind() -> None:
    first = retraining.job_name("churn", "9c0d-uid", "")
    assert first == retraining.job_name("churn", "9c0d-uid", "")
    assert first != retraining.job_name("churn", "9c0d-uid", "uid-of-the-first")
    assert first != retraining.job_name("churn", "other-uid", "")
    long = retraining.job_name("a" * 52, "9c0d-uid", "x")
    assert len(long) <= retraining.TRAINING_JOB_MAX_NAME
    assert long.startswith("aaaa")
    assert "-retrain-" in long


def test_the_retraining_job_is_the_source_with_the_overrides_and_no_owner() -> None:
    source = merged(example("TrainingJob"), {"metadata": {"namespace": "ml"}})
    overrides = {"hyperparameters": {"epochs": 9}, "data": {"source": "/churn/2026-12.parquet"}}
    policy = RetrainPolicy.model_validate({"enabled": True, "trainingJobOverrides": overrides})
    job = retraining.retraining_job(source, policy, name="churn-retrain-ab", monitor="churn", drift_since="t0")
    assert job["metadata"]["labels"] == {"scaleml.dev/retrained-by": "churn", "scaleml.dev/retrain-of": "churn"}
    assert "ownerReferences" not in job["metadata"]
    assert job["spec"]["hyperparameters"]["epochs"] == 9
    assert job["spec"]["hyperparameters"]["batchSize"] == source["spec"]["hyperparameters"]["batchSize"]
    assert job["spec"]["data"] == {**source["spec"]["data"], "source": "/churn/2026-12.parquet"}
    assert job["spec"]["output"] == source["spec"]["output"]


@pytest.mark.parametrize("field", FORBIDDEN_OVERRIDES)
def test_overrides_outside_the_allow_list_are_refused_naming_the_field(field: str) -> None:
    spec = {**example("DriftMonitor")["spec"], "retrain": {"trainingJobOverrides": FORBIDDEN_OVERRIDES[field]}}
    with pytest.raises(InvalidSpecError, match=re.escape(f"spec.retrain.trainingJobOverrides.{field}")):
        parse_spec(DRIFT_MONITOR, spec)


NOTHING_ELSE = retraining.AllowedCode()


def _retrain(
    source: dict[str, Any], overrides: dict[str, Any], allowed: retraining.AllowedCode = NOTHING_ELSE
) -> Retraining:
    spec = DriftMonitorSpec.model_validate(
        {**example("DriftMonitor")["spec"], "retrain": {"enabled": True, "after": 1, "trainingJobOverrides": overrides}}
    )
    drifting = _status(3)
    return retraining.retrain(spec, {"name": "churn", "uid": "9c0d"}, drifting, [], source, NOW, allowed=allowed)


def test_retraining_never_asks_for_more_resources_than_the_source_job() -> None:
    source = merged(example("TrainingJob"), {"metadata": {"namespace": "ml"}})
    fewer = _retrain(source, {"resources": {"workers": 1, "memory": "1Gi"}})
    assert fewer.job is not None
    assert fewer.job["spec"]["resources"]["workers"] == 1
    more = _retrain(source, {"resources": {"cpu": "64", "gpusPerWorker": 8}})
    assert (more.job, more.reason) == (None, "OverridesExceedSource")
    assert "resources.gpusPerWorker" in more.message
    assert "resources.cpu" in more.message


def test_an_override_of_one_data_check_keeps_the_source_jobs_other_checks() -> None:
    checks = {"minRows": 10000, "maxMissingFraction": 0.2}
    source = merged(example("TrainingJob"), {"metadata": {"namespace": "ml"}, "spec": {"data": {"checks": checks}}})
    retrained = _retrain(source, {"data": {"source": "churn/2026-12.parquet", "checks": {"minRows": 500}}})
    assert retrained.job is not None
    assert retrained.job["spec"]["data"]["checks"] == {"minRows": 500, "maxMissingFraction": 0.2}
    assert retrained.job["spec"]["data"]["source"] == "churn/2026-12.parquet"


def test_custom_model_code_is_retrained_only_from_modules_the_operator_allows() -> None:
    custom = merged(
        example("TrainingJob"),
        {
            "metadata": {"namespace": "ml"},
            "spec": {"model": {"architecture": "custom", "entrypoint": "team.nets:build"}},
        },
    )
    refused = _retrain(custom, {})
    assert (refused.job, refused.reason) == (None, "CustomModelNotAllowed")
    assert _retrain(custom, {}, retraining.AllowedCode(entrypoint_prefixes=("team",))).job is not None
    assert _retrain(custom, {}, retraining.AllowedCode(entrypoint_prefixes=("team.nets",))).job is not None
    assert _retrain(custom, {}, retraining.AllowedCode(entrypoint_prefixes=("tea",))).job is None


def test_a_job_of_its_own_image_is_retrained_only_from_images_the_operator_allows() -> None:
    # Its own image runs any code, whatever the architecture says: no less than custom model code.
    own = merged(
        example("TrainingJob"), {"metadata": {"namespace": "ml"}, "spec": {"image": "registry.example/ml/x:1"}}
    )
    refused = _retrain(own, {})
    assert (refused.job, refused.reason) == (None, "CustomModelNotAllowed")
    assert "its own image (registry.example/ml/x:1)" in refused.message
    assert "--retrain-image-prefix" in refused.message
    allowed = _retrain(own, {}, retraining.AllowedCode(image_prefixes=("registry.example/ml/",)))
    assert allowed.job is not None
    assert allowed.job["spec"]["image"] == "registry.example/ml/x:1"
    assert _retrain(own, {}, retraining.AllowedCode(image_prefixes=("registry.example/other/",))).job is None
    # The operator's own image, named explicitly, is the operator's code.
    workload = merged(own, {"spec": {"image": "scaleml/workloads:0.1.0"}})
    assert _retrain(workload, {}, retraining.AllowedCode(workload_image="scaleml/workloads:0.1.0")).job is not None


def _with_env(*env: dict[str, Any], image: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"env": list(env)} | ({"image": image} if image else {})
    return merged(example("TrainingJob"), {"metadata": {"namespace": "ml"}, "spec": spec})


@pytest.mark.parametrize(
    "name",
    [
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONPLATLIBDIR",
        "PYTHONEXECUTABLE",
        "PYTHONPYCACHEPREFIX",
        "PYTHONBREAKPOINT",
        "PYTHONINSPECT",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "LD_ANYTHING_ELSE",
        "GCONV_PATH",
        "OPENSSL_CONF",
        "NCCL_NET_PLUGIN",
        "CXX",
        "TRITON_PTXAS_PATH",
    ],
)
def test_env_that_loads_code_into_the_operators_image_is_not_retrained(name: str) -> None:
    # A sitecustomize.py on the data claim (PYTHONPATH), a preloaded library: the operator's image
    # would run the source job's author's code on the say of whoever edits the DriftMonitor.
    refused = _retrain(_with_env({"name": "SEED", "value": "1"}, {"name": name, "value": f"{runtime.DATA_DIR}/x"}), {})
    assert (refused.job, refused.reason) == (None, "CustomModelNotAllowed")
    assert f"spec.env {name}," in refused.message
    assert "--retrain-image-prefix" in refused.message
    # Whatever the value, or where it comes from.
    from_config = _with_env({"name": name, "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}})
    assert _retrain(from_config, {}).job is None
    # The entrypoint allow-list allows a module, not a search path that can replace it.
    allowed = retraining.AllowedCode(entrypoint_prefixes=("team",), workload_image="scaleml/workloads:0.1.0")
    assert _retrain(_with_env({"name": name, "value": "x"}, image="scaleml/workloads:0.1.0"), {}, allowed).job is None


def test_env_of_a_job_whose_image_the_operator_allows_is_retrained_as_written() -> None:
    # The allow-list vouches for the image's jobs; how another image reads its env is not the operator's to know.
    own = _with_env({"name": "PYTHONPATH", "value": "/data/tools"}, image="registry.example/ml/x:1")
    allowed = _retrain(own, {}, retraining.AllowedCode(image_prefixes=("registry.example/ml/",)))
    assert allowed.job is not None
    assert allowed.job["spec"]["env"] == [{"name": "PYTHONPATH", "value": "/data/tools"}]


def test_home_and_compile_caches_are_retrained_only_inside_the_pods_scratch_volume() -> None:
    # Under HOME, user site-packages run their .pth files; the caches hold compiled code that is loaded back.
    for name in ("HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME"):
        for value in (runtime.SCRATCH_DIR, f"{runtime.SCRATCH_DIR}/inductor"):
            assert _retrain(_with_env({"name": name, "value": value}), {}).job is not None, (name, value)
        for value in (
            f"{runtime.DATA_DIR}/home",
            f"{runtime.SCRATCH_DIR}/../data",
            f"{runtime.SCRATCH_DIR}x",
            f"{runtime.SCRATCH_DIR}/$(ELSEWHERE)",
            "",
        ):
            refused = _retrain(_with_env({"name": name, "value": value}), {})
            assert (refused.job, refused.reason) == (None, "CustomModelNotAllowed"), (name, value)
            assert f"spec.env {name}," in refused.message
        secret = _with_env({"name": name, "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})
        assert _retrain(secret, {}).job is None


def test_env_that_only_tunes_is_retrained() -> None:
    tuning = _with_env(
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONWARNINGS", "value": "ignore"},
        {"name": "NCCL_DEBUG", "value": "INFO"},
        {"name": "OMP_NUM_THREADS", "value": "4"},
    )
    assert _retrain(tuning, {}).job is not None


def test_the_producer_of_the_served_version_is_found_among_retraining_jobs() -> None:
    output = {"volumeClaim": "models", "modelName": "churn"}
    jobs = [
        {"metadata": {"name": "churn"}, "spec": {"output": output}, "status": {"modelVersion": 1}},
        {"metadata": {"name": "churn-retrain-ab"}, "spec": {"output": output}, "status": {"modelVersion": 2}},
        {
            "metadata": {"name": "fraud"},
            "spec": {"output": {**output, "modelName": "fraud"}},
            "status": {"modelVersion": 2},
        },
    ]
    assert retraining.producer(jobs, output, 2) == "churn-retrain-ab"
    assert retraining.producer(jobs, output, 7) is None


def test_the_source_job_is_found_by_the_served_model_when_the_named_one_is_gone() -> None:
    output = {"volumeClaim": "models", "modelName": "churn"}
    retrained = {"metadata": {"name": "churn-retrain-ab"}, "spec": {"output": output}, "status": {"modelVersion": 2}}
    jobs = {"churn-retrain-ab": retrained}
    target = {"spec": {"model": {"fromTrainingJob": "churn"}}, "status": {"servedVersion": 2}}
    spec = _spec()  # its reference names the TrainingJob churn, gone
    assert retraining.source_job(spec, target, jobs) is None
    assert retraining.source_job(spec, target, jobs, ModelSource("models", "churn", 2)) is retrained
    assert retraining.source_job(spec, target, jobs, ModelSource("models", "fraud", 2)) is None


def test_the_drift_condition_follows_the_monitors_results() -> None:
    def state(status: dict[str, Any]) -> tuple[str, str]:
        (found,) = drift_condition(status, generation=1, now=NOW)
        return found["status"], found["reason"]

    assert state({}) == ("Unknown", "NotChecked")
    assert state({"driftDetected": False, "windowSize": 100}) == ("False", "NoDrift")
    assert state(_status(2, driftedFeatures=["a"], driftScore=0.5)) == ("True", "DriftDetected")


def test_a_window_kept_quiet_by_a_rule_says_which_rule_in_its_condition() -> None:
    verdict = (
        "not counted as drift: plan drifted, 14% of the features tested, below thresholds.shareOfDriftedFeatures 30%"
    )
    status = {"driftDetected": False, "windowSize": 100, "driftedFeatures": ["plan"], "verdict": verdict}
    (found,) = drift_condition(status, generation=1, now=NOW)
    assert (found["status"], found["reason"]) == ("False", "NoDrift")
    assert found["message"] == f"The last window (100 rows) did not drift: {verdict}"
