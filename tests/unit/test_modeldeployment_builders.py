"""What a ModelDeployment becomes: which model version, and the Triton pods, Service, HPA and PDB around it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scaleml_api import runtime
from scaleml_api.conditions import Waiting
from scaleml_api.runtime import ServingRun
from scaleml_api.v1alpha1.modeldeployment import ModelDeploymentSpec
from scaleml_operator.builders import modeldeployment as build
from scaleml_operator.builders.meta import Owner
from tests.support.manifests import example, merged
from tests.support.metric_specs import VALID_METRICS, meaning

OWNER = Owner("ModelDeployment", "churn", "ml", "5e1f-uid")
IMAGES = ("registry.example/tritonserver:24.10-py3", "registry.example/scaleml/workloads:1")
SOURCE = build.ModelSource("models", "churn", 3)


def _spec(**changes: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(merged(example("ModelDeployment"), {"spec": changes})["spec"])


def _kinds(spec: ModelDeploymentSpec, source: build.ModelSource | None = SOURCE) -> dict[str, dict[str, Any]]:
    return {manifest["kind"]: manifest for manifest in build.children(OWNER, spec, source, IMAGES).apply}


def _training_job(version: int | None) -> dict[str, Any]:
    status = {"modelVersion": version} if version else {}
    return {"spec": {"output": {"volumeClaim": "models", "modelName": "churn"}}, "status": status}


def test_a_training_job_source_serves_the_newest_export_of_its_model() -> None:
    spec = _spec()
    assert build.resolve_source(spec, _training_job(2), 2) == build.ModelSource("models", "churn", 2)
    # A retraining run (another TrainingJob) exported version 5 into the same model directory.
    assert build.resolve_source(spec, _training_job(2), 5) == build.ModelSource("models", "churn", 5)
    assert build.resolve_source(_spec(model={"version": 1}), _training_job(2), 5).version == 1  # type: ignore[union-attr]


def test_nothing_is_deployed_before_the_training_job_exports() -> None:
    assert build.resolve_source(_spec(), None, None) == Waiting(
        "TrainingJobNotFound", "TrainingJob churn does not exist (yet)."
    )
    waiting = build.resolve_source(_spec(), _training_job(None), None)
    assert isinstance(waiting, Waiting)
    assert waiting.reason == "WaitingForModel"
    assert "Deployment" not in _kinds(_spec(), None)
    assert "Service" in _kinds(_spec(), None)


def test_a_model_that_serves_goes_on_when_its_training_job_is_gone() -> None:
    # The shipped TrainingJob has a time to live: an hour after it finished it goes, while its model serves.
    deployment = _kinds(_spec())["Deployment"]
    served = build.served_model(deployment)
    assert served == SOURCE
    assert build.resolve_source(_spec(), None, 3, served) == SOURCE
    # Retraining runs export the next versions into the same model directory: those are served.
    assert build.resolve_source(_spec(), None, 5, served) == build.ModelSource("models", "churn", 5)
    assert build.resolve_source(_spec(model={"version": 3}), None, 5, served) == SOURCE
    assert build.served_model({"metadata": {"annotations": {"scaleml.dev/model": "models/churn"}}}) is None


def test_a_repository_source_follows_its_newest_version_in_place_unless_pinned() -> None:
    repository = {"fromTrainingJob": "", "repository": {"volumeClaim": "shared", "modelName": "fraud"}}
    latest = build.resolve_source(_spec(model=repository), None, None)
    assert latest == build.ModelSource("shared", "fraud", None)
    assert isinstance(latest, build.ModelSource)
    pod = _kinds(_spec(model=repository), latest)["Deployment"]["spec"]["template"]
    assert "scaleml.dev/model-version" not in pod["metadata"]["annotations"]
    pinned = build.resolve_source(_spec(model={**repository, "version": 4}), None, None)
    assert pinned == build.ModelSource("shared", "fraud", 4)


def test_every_container_meets_the_restricted_pod_security_standard() -> None:
    pod = _kinds(_spec())["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    containers = pod["initContainers"] + pod["containers"]
    assert [c["name"] for c in containers] == ["model-agent", "capture", "triton"]
    for container in containers:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["readOnlyRootFilesystem"] is True
    # What the pod may write takes a bounded share of the node's disk: a client's requests make traces.
    assert all("sizeLimit" in volume["emptyDir"] for volume in pod["volumes"] if "emptyDir" in volume)


def test_the_model_agent_gets_the_version_and_the_spec_but_not_the_replica_count() -> None:
    pod = _kinds(_spec())["Deployment"]["spec"]["template"]
    agent = pod["spec"]["initContainers"][0]
    run = ServingRun.model_validate_json(agent["env"][0]["value"])
    assert (run.model_name, run.source_dir, run.version) == ("churn", "/repository/churn", 3)
    assert agent["image"] == IMAGES[1]
    assert agent["restartPolicy"] == "Always"
    assert agent["startupProbe"]["httpGet"]["path"] == "/healthz"

    def template(**changes: Any) -> str:
        return json.dumps(_kinds(_spec(**changes))["Deployment"]["spec"]["template"], sort_keys=True)

    # Scaling must not roll the pods; everything the agent renders into config.pbtxt must.
    assert template(replicas=5, autoscaling=None) == template(replicas=2, autoscaling=None)
    assert template() != template(batching={"maxBatchSize": 8, "preferredBatchSizes": [8]})


def _template(source: build.ModelSource = SOURCE, **changes: Any) -> str:
    return json.dumps(_kinds(_spec(**changes), source)["Deployment"]["spec"]["template"], sort_keys=True)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"promotion": {"gates": {"minMetric": 0.8, "maxRegression": 0.01}}}, id="promotion gates"),
        # The operator resolved "latest" to version 3, the one SOURCE serves: pinning 3 changes nothing served.
        pytest.param({"model": {"version": 3}}, id="model.version pinned to the served version"),
    ],
)
def test_what_only_the_operator_reads_does_not_roll_the_serving_pods(changes: dict[str, Any]) -> None:
    assert _template(**changes) == _template()
    run = ServingRun.model_validate_json(
        _kinds(_spec(**changes))["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]["env"][0]["value"]
    )
    assert run.spec.promotion.gates is None
    assert run.spec.model.version == "latest"
    assert run.version == 3


def test_what_the_serving_pods_read_rolls_them() -> None:
    assert _template(explain={"enabled": True}) != _template()
    assert _template(capture={"sampleRate": 0.5}) != _template()
    # Another version to serve is another pod template, pinned or resolved.
    assert _template(build.ModelSource("models", "churn", 4), model={"version": 4}) != _template()
    assert _template(build.ModelSource("models", "churn", 4)) != _template()


def test_the_same_amounts_spelled_otherwise_roll_no_pod() -> None:
    """Argo CD or a colleague may rewrite 8Gi as 8192Mi: the API server stores both as 8Gi."""
    written = _template(
        resources={"cpu": "2", "memory": "8Gi"}, capture={"retention": {"maxAge": "168h", "maxBytes": "10Gi"}}
    )
    spelled = {"cpu": "2000m", "memory": "8192Mi"}
    assert _template(resources=spelled, capture={"retention": {"maxAge": "10080m", "maxBytes": "10240Mi"}}) == written
    triton = _kinds(_spec(resources=spelled))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert (triton["resources"]["limits"]["cpu"], triton["resources"]["limits"]["memory"]) == ("2", "8Gi")
    # Another amount is another template.
    assert _template(resources={"memory": "8193Mi"}) != _template()


def test_triton_runs_the_spec_options_with_gpus_and_drains_before_it_stops() -> None:
    deployment = _kinds(_spec())["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    assert triton["image"] == IMAGES[0]
    assert triton["command"][:2] == ["/bin/sh", "-c"]
    capture = _spec().capture
    assert capture.enabled
    assert triton["command"][3:] == [
        "tritonserver",
        *runtime.triton_options("/serving"),
        *runtime.trace_options(capture, "/traces"),
    ]
    assert "--model-repository=/serving" in triton["command"]
    assert triton["resources"]["limits"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": 1}
    assert triton["resources"]["requests"] == triton["resources"]["limits"]
    assert triton["lifecycle"]["preStop"] == {"sleep": {"seconds": build.DRAIN_SECONDS}}
    assert pod["terminationGracePeriodSeconds"] > build.DRAIN_SECONDS
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}

    assert not {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"} & {e["name"] for e in triton["env"]}

    cpu_only = _kinds(_spec(resources={"gpus": 0}, instances={"kind": "auto"}))["Deployment"]
    cpu_pod = cpu_only["spec"]["template"]["spec"]
    assert "tolerations" not in cpu_pod
    assert "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    # A CUDA image on a GPU node would otherwise see every GPU: none is this pod's.
    env = {e["name"]: e["value"] for e in cpu_pod["containers"][0]["env"]}
    assert (env["NVIDIA_VISIBLE_DEVICES"], env["CUDA_VISIBLE_DEVICES"]) == ("void", "")


def test_triton_runs_a_copy_of_the_python_backend_it_may_make_executable(tmp_path: Path) -> None:
    backends = tmp_path / "opt" / "backends"
    for backend in ("python", "pytorch"):
        (backends / backend).mkdir(parents=True)
        (backends / backend / "lib.so").write_text(backend)
    scratch, serving, bin_dir = tmp_path / "scratch", tmp_path / "serving", tmp_path / "bin"
    for directory in (scratch, serving, bin_dir):
        directory.mkdir()
    (serving / runtime.ADMIN_KEY_FILE).write_text("k" * 40)
    fake = bin_dir / "tritonserver"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    script = (
        build.TRITON_SCRIPT.replace(f"{runtime.SCRATCH_DIR}/backends", f"{scratch}/backends")
        .replace(f"{runtime.SERVING_DIR}/", f"{serving}/")
        .replace(build.TRITON_BACKENDS, str(backends))
    )
    triton = _kinds(_spec(backend="python"))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["command"][2] == build.TRITON_SCRIPT
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    ran = subprocess.run(["/bin/sh", "-c", script, *triton["command"][3:]], env=env, capture_output=True, text=True)

    assert ran.returncode == 0, ran.stderr
    assert f"--backend-directory={scratch}/backends" in ran.stdout.splitlines()
    staged = scratch / "backends"
    assert (staged / "python").is_dir()
    assert not (staged / "python").is_symlink()
    assert (staged / "python" / "lib.so").stat().st_uid == os.getuid()
    assert (staged / "pytorch").resolve() == backends / "pytorch"
    # A restarted container finds the copy it made before, and starts all the same.
    again = subprocess.run(["/bin/sh", "-c", script, *triton["command"][3:]], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert sorted(path.name for path in staged.iterdir()) == ["python", "pytorch"]
    # Without Triton's usual directory (another image), the server keeps its default.
    shutil.rmtree(backends)
    bare = subprocess.run(["/bin/sh", "-c", script, *triton["command"][3:]], env=env, capture_output=True, text=True)
    assert bare.returncode == 0, bare.stderr
    assert not any(line.startswith("--backend-directory") for line in bare.stdout.splitlines())


@pytest.mark.parametrize("capture", [True, False])
def test_clients_call_triton_whether_capture_is_on_or_off(capture: bool) -> None:
    kinds = _kinds(_spec(capture={"enabled": capture, "volumeClaim": "captures"}))
    ports = {p["name"]: p["targetPort"] for p in kinds["Service"]["spec"]["ports"]}
    expected = {"http": "http", "grpc": "grpc", "metrics": "metrics"}
    assert ports == expected | ({"capture-metrics": "capture-metrics"} if capture else {})


def test_without_capture_no_part_of_it_is_in_the_pod() -> None:
    pod = _kinds(_spec(capture={"enabled": False}))["Deployment"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["model-agent"]
    assert {"captures", "traces"}.isdisjoint(v["name"] for v in pod["volumes"])
    triton = pod["containers"][0]
    assert not [option for option in triton["command"] if option.startswith("--trace")]
    assert "traces" not in {mount["name"] for mount in triton["volumeMounts"]}


def test_autoscaling_owns_the_replicas_and_lists_cpu_and_extra_metrics() -> None:
    queue_time = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "triton_queue_compute_ratio"},
            "target": {"type": "AverageValue", "averageValue": "1"},
        },
    }
    kinds = _kinds(_spec(autoscaling={"minReplicas": 2, "maxReplicas": 8, "metrics": [queue_time]}))
    assert "replicas" not in kinds["Deployment"]["spec"]
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "churn-triton"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert hpa["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert hpa["metrics"][1] == queue_time
    assert kinds["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    # Without a CPU target, on the extra metrics alone.
    queue_only = _spec(autoscaling={"targetCPUUtilization": 0, "metrics": [queue_time]})
    assert _kinds(queue_only)["HorizontalPodAutoscaler"]["spec"]["metrics"] == [queue_time]


def test_every_kind_of_metric_reaches_the_autoscaler_as_written() -> None:
    hpa = _kinds(_spec(autoscaling={"metrics": list(VALID_METRICS)}))["HorizontalPodAutoscaler"]["spec"]
    assert [meaning(metric) for metric in hpa["metrics"][1:]] == [meaning(metric) for metric in VALID_METRICS]


@pytest.mark.parametrize(
    ("changes", "hpa", "pdb"),
    [
        ({"autoscaling": None, "replicas": 1}, False, False),
        ({"autoscaling": None, "replicas": 3}, False, True),
        ({"autoscaling": {"minReplicas": 1, "maxReplicas": 3}}, True, False),
    ],
)
def test_optional_children_that_should_not_exist_are_listed_for_deletion(
    changes: dict[str, Any], hpa: bool, pdb: bool
) -> None:
    children = build.children(OWNER, _spec(**changes), SOURCE, IMAGES)
    applied = {manifest["kind"] for manifest in children.apply}
    absent = {kind for _, kind, _ in children.absent}
    assert ("HorizontalPodAutoscaler" in applied, "PodDisruptionBudget" in applied) == (hpa, pdb)
    assert absent == {"HorizontalPodAutoscaler", "PodDisruptionBudget"} - applied
    if not hpa:
        deployment = next(m for m in children.apply if m["kind"] == "Deployment")
        assert deployment["spec"]["replicas"] == changes["replicas"]


def test_no_autoscaler_is_made_before_the_deployment_it_scales() -> None:
    # It would scale any Deployment of that name: while the model is awaited, one the operator did not make.
    waiting = build.children(OWNER, _spec(autoscaling={"minReplicas": 2, "maxReplicas": 9}), None, IMAGES)
    assert [manifest["kind"] for manifest in waiting.apply] == ["Service", "PodDisruptionBudget"]
    assert waiting.absent == []
    serving = build.children(OWNER, _spec(autoscaling={"minReplicas": 2, "maxReplicas": 9}), SOURCE, IMAGES)
    kinds = [manifest["kind"] for manifest in serving.apply]
    assert kinds.index("Deployment") < kinds.index("HorizontalPodAutoscaler")


@pytest.mark.parametrize(
    ("cpu", "instances", "threads"),
    [("1", 1, 1), ("4", 1, 4), ("4", 2, 2), ("500m", 1, 1), ("2500m", 1, 2), ("1.5", 1, 1), (8, 3, 2)],
)
def test_each_model_instance_gets_its_share_of_the_cpu_limit_as_threads(cpu: Any, instances: int, threads: int) -> None:
    spec = _spec(resources={"cpu": cpu, "gpus": 0}, instances={"count": instances, "kind": "cpu"})
    assert build.threads_per_instance(spec) == threads
    triton = _kinds(spec)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "OMP_NUM_THREADS", "value": str(threads)} in triton["env"]


def test_triton_restricts_its_management_apis_to_the_key_the_agent_made_in_the_pod() -> None:
    pod = _kinds(_spec())["Deployment"]["spec"]["template"]["spec"]
    script = pod["containers"][0]["command"][2]
    restriction = "model-repository,logging,trace,shared-memory:scaleml-admin-key="
    assert f'--http-restricted-api={restriction}"$key"' in script
    assert f'--grpc-restricted-protocol={restriction}"$key"' in script
    assert 'key="$(cat /serving/.triton-admin-key)"' in script
    # The agent makes the key in the volume Triton reads; nothing in the pod's spec holds it.
    agent = pod["initContainers"][0]
    assert {"name": "serving", "mountPath": "/serving"} in agent["volumeMounts"]
    assert "admin-key" not in json.dumps(agent)
    assert "key=" not in json.dumps(pod["containers"][0]["env"])


def test_with_capture_triton_traces_the_sample_and_the_converter_gets_the_capture_settings() -> None:
    capture = {"retention": {"maxAge": "24h", "maxBytes": "5Gi"}, "requestIds": True, "sampleRate": 0.25}
    pod = _kinds(_spec(capture=capture))["Deployment"]["spec"]["template"]["spec"]
    triton, converter = pod["containers"][0], pod["initContainers"][1]
    tracing = [option for option in triton["command"] if option.startswith("--trace-config")]
    assert tracing == [
        "--trace-config=mode=triton",
        "--trace-config=level=TIMESTAMPS",
        "--trace-config=level=TENSORS",
        "--trace-config=rate=4",
        "--trace-config=count=-1",
        "--trace-config=triton,file=/traces/trace.json",
        "--trace-config=triton,log-frequency=1",
    ]
    assert converter["command"][-4:] == ["--format=parquet", "--max-age=24h", "--max-bytes=5Gi", "--request-ids"]
    assert "--traces=/traces" in converter["command"]
    # Triton writes the traces, the converter reads and deletes them; it needs nothing else of the pod.
    assert {"name": "traces", "mountPath": "/traces"} in triton["volumeMounts"]
    assert converter["volumeMounts"] == [
        {"name": "captures", "mountPath": "/captures"},
        {"name": "traces", "mountPath": "/traces"},
    ]
    assert {"name": "traces", "emptyDir": {"sizeLimit": build.TRACES_SIZE}} in pod["volumes"]
    default = _kinds(_spec())["Deployment"]["spec"]["template"]["spec"]["initContainers"][1]["command"]
    assert {"--max-age=168h", "--max-bytes=10Gi"} <= set(default)
    assert "--request-ids" not in default


def _options(container: dict[str, Any]) -> dict[str, str]:
    return dict(option.split("=", 1) for option in container["command"] if option.startswith("--") and "=" in option)


def test_model_deployments_that_share_a_capture_claim_each_write_into_a_directory_of_their_own() -> None:
    """The shipped example names its claim `captures`: two of them may well share it."""
    pods = {
        name: build.pod_template(Owner("ModelDeployment", name, "ml", f"{name}-uid"), _spec(), SOURCE, IMAGES)["spec"]
        for name in ("churn", "fraud")
    }
    claims = {name: {v["name"]: v for v in pod["volumes"]}["captures"] for name, pod in pods.items()}
    assert (
        claims["churn"] == claims["fraud"] == {"name": "captures", "persistentVolumeClaim": {"claimName": "captures"}}
    )
    converters = {name: _options(pod["initContainers"][1]) for name, pod in pods.items()}
    assert {name: options["--directory"] for name, options in converters.items()} == {
        "churn": "/captures/churn",
        "fraud": "/captures/fraud",
    }
    # What the layout before this one left at the claim's root is still swept, as it was.
    assert converters["churn"]["--legacy-directory"] == converters["fraud"]["--legacy-directory"] == "/captures"


@pytest.mark.parametrize("name", ["", "..", "a/b", "a.b", "Churn", "7up"])
def test_a_directory_of_captures_is_named_after_a_dns_1035_label_only(name: str) -> None:
    with pytest.raises(ValueError, match="not a ModelDeployment's name"):
        runtime.capture_dir(name)


def test_with_explanations_the_converter_leaves_their_requests_out() -> None:
    spec = _spec(explain={"enabled": True})
    converter = _kinds(spec)["Deployment"]["spec"]["template"]["spec"]["initContainers"][1]
    assert f"--skip-model={SOURCE.model_name}-explain" in converter["command"]
    plain = _kinds(_spec())["Deployment"]["spec"]["template"]["spec"]["initContainers"][1]
    assert not [option for option in plain["command"] if option.startswith("--skip-model")]


def test_a_sample_rate_of_zero_traces_nothing() -> None:
    pod = _kinds(_spec(capture={"sampleRate": 0}))["Deployment"]["spec"]["template"]["spec"]
    tracing = [option for option in pod["containers"][0]["command"] if option.startswith("--trace-config=level")]
    assert tracing == ["--trace-config=level=OFF"]


def test_a_python_backend_model_writes_its_own_traces_and_triton_traces_nothing() -> None:
    spec = _spec(backend="python", capture={"enabled": True, "volumeClaim": "captures"})
    pod = _kinds(spec)["Deployment"]["spec"]["template"]["spec"]
    triton, converter = pod["containers"][0], pod["initContainers"][1]
    assert not [option for option in triton["command"] if option.startswith("--trace")]
    # The model writes into the trace volume; the converter reads it as ever.
    assert {"name": "traces", "mountPath": "/traces"} in triton["volumeMounts"]
    assert "--traces=/traces" in converter["command"]
