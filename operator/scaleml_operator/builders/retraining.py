"""Retraining: when a DriftMonitor creates a TrainingJob, which one, and under what name.

What persists is what `spec.retrain.when` counts: drifted windows (drift), windows whose estimated
accuracy is degraded (degradation), or either, each with its own run of windows in the status
(consecutiveDriftedWindows and driftSince, consecutiveDegradedWindows and degradedSince); a rule is
due when its run reaches `spec.retrain.after`. With either, the rules count apart and the first due
one triggers: a window that drifts without losing accuracy does not lengthen the run of degraded
ones.

Nothing of the decision is taken from the monitor's status beyond the runs of windows: any pod of the
namespace may run as the monitor's ServiceAccount and write that status. Whether a retraining job
still runs and when the last one was made come from the retraining TrainingJobs themselves (their
metadata, which the operator wrote, and their workers' Jobs, which the Job controller reports on).
A forged run of windows can call for a job; at most one follows per cooldown, and none while one runs.

A job's name is derived from the monitor's uid and the job made before it, so each job has at most
one successor: an operator restarted at any point (even between creating the job and recording it),
a cache that does not show the newest job yet, or two operators at once derive the same name again,
and the API server refuses a second job.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from scaleml_api import runtime
from scaleml_api.base import API_VERSION, duration_seconds, quantity_value
from scaleml_api.merge import merge_patch
from scaleml_api.runtime import Lineage
from scaleml_api.v1alpha1 import TRAINING_JOB
from scaleml_api.v1alpha1.driftmonitor import (
    COOLDOWN_ACTIVE,
    CUSTOM_MODEL_NOT_ALLOWED,
    DEGRADATION_NOT_PERSISTENT,
    DISABLED,
    DRIFT_NOT_PERSISTENT,
    EPISODE_RETRAINED,
    INVALID_OVERRIDES,
    NO_DRIFT,
    NO_SOURCE_TRAINING_JOB,
    NOT_DEGRADED,
    OVERRIDES_EXCEED_SOURCE,
    RETRAIN_RUNNING,
    RETRAIN_TRIGGERED,
    RUN_FIELDS,
    TRAINING_JOB_RUNNING,
    DriftMonitorSpec,
    RetrainPolicy,
    RetrainRule,
)
from scaleml_api.v1alpha1.modeldeployment import PROMOTED
from scaleml_api.v1alpha1.pods import EnvVar
from scaleml_api.v1alpha1.trainingjob import FINISHED_PHASES, MAX_TTL_SECONDS, TrainingJobSpec
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_operator.builders.modeldeployment import ModelSource
from scaleml_operator.builders.trainingjob import job_finished

RETRAINED_BY_LABEL: Final = "scaleml.dev/retrained-by"
RETRAIN_OF_LABEL: Final = "scaleml.dev/retrain-of"
# When the run of windows that triggered the job began (drifted or degraded ones, see the rule).
DRIFT_SINCE_ANNOTATION: Final = "scaleml.dev/drift-since"
RETRAIN_RULE_ANNOTATION: Final = "scaleml.dev/retrain-rule"
TRAINING_JOB_MAX_NAME: Final = 48
_SUFFIX: Final = "-retrain-"
_DIGEST_CHARS: Final = 8
# Captures hold inputs and the model's own outputs, never the true labels: training on them would
# teach the model its own mistakes.
CAPTURED_DATA_NOTE: Final = (
    "retrain.useCapturedData is not applied: captured requests carry no labels; the job trains on its "
    "data.source, where newly labelled data belongs."
)


_COUNTED: Final[dict[str, tuple[RetrainRule, ...]]] = {
    "drift": ("drift",),
    "degradation": ("degradation",),
    "either": ("drift", "degradation"),
}


@dataclass(frozen=True)
class Decision:
    """Whether to create a TrainingJob now, and why (the reason and message of the Retraining condition).

    When it creates one: the rule that is due and when its run of windows began.
    """

    create: bool
    reason: str
    message: str
    rule: RetrainRule | None = None
    since: str = ""


@dataclass(frozen=True)
class Run:
    """One rule's run of windows, as the monitor wrote it into the status."""

    rule: RetrainRule
    active: bool
    windows: int
    since: str

    @classmethod
    def of(cls, rule: RetrainRule, status: Mapping[str, Any]) -> Run:
        flag, count, since = RUN_FIELDS[rule]
        started = str(status.get(since) or "")
        return cls(rule, bool(status.get(flag)) and bool(started), int(status.get(count) or 0), started)

    def persisted(self) -> str:
        if self.rule == "drift":
            return f"Drift persisted for {self.windows} windows."
        return f"The estimated accuracy stayed degraded for {self.windows} windows."


def lineage(metadata: Mapping[str, Any]) -> Lineage | None:
    """The drift episode a retraining TrainingJob (its metadata) records, or None for a job created by hand."""
    labels, annotations = metadata.get("labels") or {}, metadata.get("annotations") or {}
    if RETRAINED_BY_LABEL not in labels:
        return None
    return Lineage(
        retrained_by=str(labels[RETRAINED_BY_LABEL]),
        retrain_of=str(labels.get(RETRAIN_OF_LABEL, "")),
        since=str(annotations.get(DRIFT_SINCE_ANNOTATION, "")),
        rule=str(annotations.get(RETRAIN_RULE_ANNOTATION, "")),
    )


def job_name(monitor: str, monitor_uid: str, after: str) -> str:
    """The name of the monitor's retraining job that follows the job of uid `after` ("": its first)."""
    digest = hashlib.sha256(f"{monitor_uid}/{after}".encode()).hexdigest()[:_DIGEST_CHARS]
    base = monitor[: TRAINING_JOB_MAX_NAME - len(_SUFFIX) - _DIGEST_CHARS].rstrip("-.")
    return f"{base}{_SUFFIX}{digest}"


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def running(training_job: Mapping[str, Any]) -> bool:
    """Whether a TrainingJob has yet to finish (it neither succeeded nor failed), as its status says."""
    return (training_job.get("status") or {}).get("phase") not in FINISHED_PHASES


@dataclass(frozen=True)
class Retrained:
    """A retraining TrainingJob of the monitor's, and whether it ran to its end.

    Both come from what no pod writes: the TrainingJob's metadata (its creation time, and the labels
    and annotations the operator gave it) and its workers' Job, whose conditions the Job controller
    sets. The TrainingJob's status is written by its trainer pods too, which any pod of the namespace
    may impersonate; it says whether the job finished only while the job has no Job, and then the
    operator makes none for it either.
    """

    job: Mapping[str, Any]
    finished: bool

    @property
    def name(self) -> str:
        return str(self.job["metadata"]["name"])

    @property
    def uid(self) -> str:
        return str(self.job["metadata"].get("uid") or "")

    @property
    def created(self) -> str:
        return str(self.job["metadata"].get("creationTimestamp") or "")

    @property
    def rule(self) -> str:
        return str((self.job["metadata"].get("annotations") or {}).get(RETRAIN_RULE_ANNOTATION, "drift"))

    def retrains(self, run: Run) -> bool:
        """Whether this job was made for `run` (the same rule's run of windows, begun at the same moment)."""
        since = (self.job["metadata"].get("annotations") or {}).get(DRIFT_SINCE_ANNOTATION)
        return (since, self.rule) == (run.since, run.rule)


def retrained(jobs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any] | None]]) -> list[Retrained]:
    """The monitor's retraining TrainingJobs, each given with its workers' Job (None: it has none), newest first."""
    past = [Retrained(job, job_finished(workers) if workers is not None else not running(job)) for job, workers in jobs]
    return sorted(past, key=lambda job: (job.created, job.name), reverse=True)


def successor(monitor: Mapping[str, Any], past: Sequence[Retrained]) -> str:
    """The name of the monitor's next retraining job: the successor of the newest one that has none yet.

    Newest by creation, but a job whose successor exists is never the newest: two made in one second
    (the timestamps' precision) are still told apart.
    """
    names = {job.name for job in past}
    newest = next((job for job in past if job_name(monitor["name"], monitor["uid"], job.uid) not in names), None)
    return job_name(monitor["name"], monitor["uid"], newest.uid if newest is not None else "")


def decide(policy: RetrainPolicy, status: Mapping[str, Any], past: Sequence[Retrained], now: datetime) -> Decision:
    """Create a TrainingJob after `policy.after` windows in a row of what `policy.when` counts, unless one
    runs, the run of windows already had its job, or the cooldown holds.

    `status` gives the runs of windows (the monitor's report), `past` the monitor's retraining jobs,
    newest first (see `retrained`): how long ago and whether one runs are never taken from the status.
    """
    if not policy.enabled:
        return Decision(False, DISABLED, "spec.retrain.enabled is false.")
    runs = [Run.of(rule, status) for rule in _COUNTED[policy.when]]
    due = next((run for run in runs if run.active and run.windows >= policy.after), None)
    if due is None:
        return _not_due(runs, policy.after)
    if (busy := next((job for job in past if not job.finished), None)) is not None:
        return Decision(False, RETRAIN_RUNNING, f"TrainingJob {busy.name} is still running.")
    if (done := next((job for job in past if job.retrains(due)), None)) is not None:
        return Decision(
            False,
            EPISODE_RETRAINED,
            f"TrainingJob {done.name} retrained for this run of windows (since {due.since}); the next run may "
            "retrain again.",
        )
    if past and past[0].created:
        until = _parse(past[0].created) + timedelta(seconds=duration_seconds(policy.cooldown))
        if now < until:
            # A stable message: each status write re-runs this, and a changing one would write again.
            what = "Drift persists" if due.rule == "drift" else "The estimated accuracy stays degraded"
            return Decision(
                False,
                COOLDOWN_ACTIVE,
                f"{what}; the cooldown of {policy.cooldown} ends at {until:%Y-%m-%dT%H:%M:%SZ}.",
            )
    return Decision(True, RETRAIN_TRIGGERED, due.persisted(), rule=due.rule, since=due.since)


def _not_due(runs: Sequence[Run], after: int) -> Decision:
    """Why no rule is due: none is active, or the longest active run is shorter than `after`."""
    active = [run for run in runs if run.active]
    if not active:
        if [run.rule for run in runs] == ["degradation"]:
            return Decision(False, NOT_DEGRADED, "The last window's estimated accuracy is not degraded.")
        either = len(runs) > 1
        return Decision(
            False,
            NO_DRIFT,
            "The last window neither drifted nor degraded." if either else "The last window did not drift.",
        )
    longest = max(active, key=lambda run: run.windows)
    counts = "; ".join(
        f"{run.windows if run.active else 0} of {after} {'drifted' if run.rule == 'drift' else 'degraded'} windows"
        " in a row"
        for run in runs
    )
    return Decision(
        False, DRIFT_NOT_PERSISTENT if longest.rule == "drift" else DEGRADATION_NOT_PERSISTENT, f"{counts}."
    )


def retraining_job(
    source: Mapping[str, Any],
    policy: RetrainPolicy,
    *,
    name: str,
    monitor: str,
    drift_since: str,
    rule: RetrainRule = "drift",
) -> dict[str, Any]:
    """The TrainingJob that retrains `source` (the job that produced the served model), with the overrides.

    It writes the next version of the same model, which the ModelDeployment then rolls to. Not owned
    by the monitor: deleting a monitor must not delete the record of what trained a served model.
    It is also the record of the cooldown: a time to live (ttlSecondsAfterFinished) shorter than the
    cooldown is raised to it, so the job is there until the cooldown it starts has passed.
    """
    meta = source["metadata"]
    spec = merge_patch(source["spec"], policy.training_job_overrides.to_wire())
    run_policy = spec.get("runPolicy") or {}
    if (ttl := run_policy.get("ttlSecondsAfterFinished")) is not None:
        cooldown = duration_seconds(policy.cooldown)
        kept = min(max(int(ttl), cooldown), MAX_TTL_SECONDS)
        spec = {**spec, "runPolicy": {**run_policy, "ttlSecondsAfterFinished": kept}}
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {RETRAINED_BY_LABEL: monitor, RETRAIN_OF_LABEL: meta["name"]},
            "annotations": {DRIFT_SINCE_ANNOTATION: drift_since, RETRAIN_RULE_ANNOTATION: rule},
        },
        "spec": spec,
    }


def producer(training_jobs: Sequence[Mapping[str, Any]], output: Mapping[str, Any], version: int | None) -> str | None:
    """The TrainingJob that exported `version` into `output`'s model directory, if it still exists."""
    for job in training_jobs:
        job_output = job["spec"].get("output", {})
        same_model = (job_output.get("volumeClaim"), job_output.get("modelName")) == (
            output.get("volumeClaim"),
            output.get("modelName"),
        )
        if same_model and version is not None and (job.get("status") or {}).get("modelVersion") == version:
            return str(job["metadata"]["name"])
    return None


def source_job(
    spec: DriftMonitorSpec,
    model_deployment: Mapping[str, Any] | None,
    jobs: Mapping[str, Mapping[str, Any]],
    served: ModelSource | None = None,
) -> Mapping[str, Any] | None:
    """The TrainingJob to retrain: the one that produced the served model, else the one the reference
    or the deployment names. `jobs` are the namespace's TrainingJobs by name; `served` the model the
    deployment's Deployment serves, by which the producer is found when the named one is gone (its
    ttlSecondsAfterFinished ran out)."""
    deployment = model_deployment or {}
    named = spec.reference.from_training_job or (deployment.get("spec") or {}).get("model", {}).get(
        "fromTrainingJob", ""
    )
    anchor = jobs.get(named) if named else None
    version = (deployment.get("status") or {}).get("servedVersion")
    if anchor is not None:
        name = producer(list(jobs.values()), anchor["spec"]["output"], version)
        return jobs[name] if name is not None else anchor
    if served is None:
        return None
    output = {"volumeClaim": served.volume_claim, "modelName": served.model_name}
    name = producer(list(jobs.values()), output, version or served.version)
    return jobs[name] if name is not None else None


@dataclass(frozen=True)
class Retraining:
    """The retraining step's verdict: the Retraining condition, and the TrainingJob to create, if any."""

    active: bool
    reason: str
    message: str
    job: dict[str, Any] | None = None
    # What persisted to call for `job`.
    rule: RetrainRule | None = None
    # The newest retraining job there is (name, creation time, rule), for the status to report.
    newest: tuple[str, str, str] | None = None


def exceeding(source: TrainingJobSpec, retrained: TrainingJobSpec) -> list[str]:
    """What of the retraining job's resources is more than the source job's (overrides may only shrink them)."""
    before, after = source.resources, retrained.resources
    counts = {
        "workers": (before.workers, after.workers),
        "procsPerWorker": (before.processes_per_worker, after.processes_per_worker),
        "gpusPerWorker": (before.gpus_per_worker, after.gpus_per_worker),
        "cpu": (quantity_value(before.cpu), quantity_value(after.cpu)),
        "memory": (quantity_value(before.memory), quantity_value(after.memory)),
    }
    return [f"resources.{name} is above the source job's" for name, (was, now) in counts.items() if now > was]


@dataclass(frozen=True)
class AllowedCode:
    """What code, besides the operator's own, a retraining job may run: the operator's settings.

    Retraining runs code someone else chose on behalf of whoever may edit a DriftMonitor, so code
    that is not the operator's (custom model code, an image of the source job's own) is retrained
    only where the operator allows it; nothing by default.
    """

    # Python packages whose custom model code (model.entrypoint) may be retrained.
    entrypoint_prefixes: tuple[str, ...] = ()
    # Image references (as written, e.g. "registry.example/ml/") whose jobs may be retrained.
    image_prefixes: tuple[str, ...] = ()
    # The operator's own workload image, which a job may also name explicitly.
    workload_image: str = ""


# Variables that make the interpreter (CPython), the dynamic loader (glibc's ld.so) or what torch loads
# and runs (NCCL's plugins, OpenSSL's modules, torch.compile's compilers, Triton) take code from
# outside the image: a search path for modules or shared objects, a file or callable run at start-up,
# a library to load, a program to run. In the operator's own image they would run the source job's
# author's code on someone else's say. Named by what reads them, not by what they hold: a value from
# a ConfigMap or Secret is not known here. Excluded on purpose: variables that only tune (PYTHONWARNINGS,
# PYTHONIOENCODING, NCCL_DEBUG) or name modules the image's own path resolves once these are refused.
CODE_LOADING_ENV: Final = frozenset(
    {
        # CPython, "Command line and environment": module search path, prefixes, start-up and user files.
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONUSERBASE",
        "PYTHONPLATLIBDIR",
        "PYTHONEXECUTABLE",
        "PYTHONPYCACHEPREFIX",  # bytecode read back in place of the image's sources
        "PYTHONBREAKPOINT",  # any callable, run by breakpoint()
        "PYTHONINSPECT",  # runs what stdin holds after the program
        # glibc: besides LD_* (below), loaders glibc itself ignores in secure-execution mode.
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        # OpenSSL (Python's ssl): a config file that loads engines and providers, and where they are.
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "OPENSSL_MODULES",
        # NCCL: a file of NCCL_* settings, and the shared objects it loads as plugins.
        "NCCL_CONF_FILE",
        "NCCL_NET_PLUGIN",
        "NCCL_TUNER_PLUGIN",
        "NCCL_PROFILER_PLUGIN",
        "NCCL_ENV_PLUGIN",
        # torch.compile: the compilers it runs and the headers and remote caches it compiles and loads.
        "CC",
        "CXX",
        "TORCHINDUCTOR_CUTLASS_DIR",
        "TORCHINDUCTOR_CK_DIR",
        "TORCHINDUCTOR_REDIS_HOST",
        "TORCHINDUCTOR_FX_GRAPH_REMOTE_CACHE",
        "TORCHINDUCTOR_AUTOTUNE_REMOTE_CACHE",
        "TORCHINDUCTOR_AUTOGRAD_REMOTE_CACHE",
    }
)
# Every ld.so variable (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...), and Triton's knobs, which name
# its compilers, libraries and caches.
CODE_LOADING_PREFIXES: Final = ("LD_", "TRITON_")
# Directories under which code is found and loaded back: user site-packages and their .pth files
# under HOME, compiled kernels in the caches. Safe where the operator puts them, in the pod's scratch
# volume, which every pod starts empty; anywhere else (a claim) someone may have left code there.
CODE_DIRECTORY_ENV: Final = frozenset(
    {
        "HOME",
        "XDG_CACHE_HOME",
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "TRITON_HOME",
        "TORCH_EXTENSIONS_DIR",
        "TORCH_HOME",
        "CUDA_CACHE_PATH",
    }
)


def _in_scratch(value: str) -> bool:
    # No $(VAR): Kubernetes expands it when the pod starts, to anything.
    path = posixpath.normpath(value)
    return "$(" not in value and (path == runtime.SCRATCH_DIR or path.startswith(f"{runtime.SCRATCH_DIR}/"))


def code_loading_env(env: Sequence[EnvVar]) -> str:
    """The first variable of `env` that would load code from outside the image, or ""."""
    for variable in env:
        if variable.name in CODE_DIRECTORY_ENV:
            if variable.value_from is not None or not _in_scratch(variable.value):
                return variable.name
        elif variable.name in CODE_LOADING_ENV or variable.name.startswith(CODE_LOADING_PREFIXES):
            return variable.name
    return ""


def code_refused(spec: TrainingJobSpec, allowed: AllowedCode) -> str:
    """Why retraining may not run `spec`'s code, or "" when it may.

    An image the operator allows is retrained with its job's env as written: the operator cannot know
    how another image reads its environment, and the allow-list vouches for the image's jobs. In the
    operator's own image, env must not load code from elsewhere (CODE_LOADING_ENV).
    """
    module = spec.model.entrypoint.split(":", 1)[0]
    if spec.model.architecture == "custom" and not any(
        module == prefix or module.startswith(f"{prefix}.") for prefix in allowed.entrypoint_prefixes
    ):
        return (
            f"custom model code ({spec.model.entrypoint}), retrained only from modules the operator allows "
            "(--retrain-entrypoint-prefix)"
        )
    if spec.image not in ("", allowed.workload_image):
        if not any(spec.image.startswith(prefix) for prefix in allowed.image_prefixes):
            return (
                f"its own image ({spec.image}), retrained only from images the operator allows (--retrain-image-prefix)"
            )
        return ""
    if variable := code_loading_env(spec.env):
        return (
            f"the operator's image with spec.env {variable}, which loads code from outside the image; such env is "
            "retrained only in images the operator allows (--retrain-image-prefix)"
        )
    return ""


def held_back(last_job: Mapping[str, Any] | None, model_deployment: Mapping[str, Any] | None) -> str:
    """What the monitor's status says when the version its last retraining exported failed the target's gates."""
    if last_job is None or model_deployment is None:
        return ""
    version = (last_job.get("status") or {}).get("modelVersion")
    status = model_deployment.get("status") or {}
    if version is None or status.get("candidateVersion") != version:
        return ""
    promoted: Mapping[str, Any] = next((c for c in status.get("conditions") or () if c.get("type") == PROMOTED), {})
    return (
        f"Version {version}, which TrainingJob {last_job['metadata']['name']} exported, is held back by "
        f"ModelDeployment {model_deployment['metadata']['name']}'s promotion gates: {promoted.get('message', '')}"
    )


def retrain(
    spec: DriftMonitorSpec,
    monitor: Mapping[str, Any],
    status: Mapping[str, Any],
    past: Sequence[Retrained],
    source: Mapping[str, Any] | None,
    now: datetime,
    *,
    allowed: AllowedCode = AllowedCode(),
    model_deployment: Mapping[str, Any] | None = None,
) -> Retraining:
    """The whole retraining step of a DriftMonitor (`monitor` is its metadata), pure.

    `past` are the retraining TrainingJobs it made, newest first (see `retrained`), `source` the one
    to retrain (see `source_job`; needed only when `decide` says create). The job is named as the
    successor of the newest in `past`, so a step repeated on the same jobs (a restart, a cache that
    lags) finds the job it created instead of making a second. The job is the source job with the
    allowed overrides, never more resources, and code that is not the operator's only where
    `allowed` (the operator's settings) says so.
    """
    if not spec.retrain.enabled:
        return Retraining(False, DISABLED, "spec.retrain.enabled is false.")
    decision = decide(spec.retrain, status, past, now)
    job = None
    if decision.create:
        decision, job = _build(decision, spec, monitor, source, allowed, successor(monitor, past))
    last = job if job is not None else (past[0].job if past else None)
    busy = job if job is not None else next((done.job for done in past if not done.finished), None)
    if busy is not None:
        origin = (busy["metadata"].get("labels") or {}).get(RETRAIN_OF_LABEL, "its source")
        rule = (busy["metadata"].get("annotations") or {}).get(RETRAIN_RULE_ANNOTATION, "drift")
        active, reason = True, TRAINING_JOB_RUNNING
        message = f"TrainingJob {busy['metadata']['name']} retrains {origin} ({rule} persisted)."
    else:
        active, reason, message = False, decision.reason, decision.message
    if held := held_back(last, model_deployment):
        message += f" {held}"
    if spec.retrain.use_captured_data:
        message += f" {CAPTURED_DATA_NOTE}"
    # What the status reports as the last job: the newest made since this monitor was (a monitor
    # re-created under the name of a deleted one inherits its cooldown, not its record).
    born = str(monitor.get("creationTimestamp") or "")
    newest = next(((done.name, done.created, done.rule) for done in past if done.created >= born), None)
    return Retraining(active, reason, message, job, decision.rule if job is not None else None, newest)


def _build(
    due: Decision,
    spec: DriftMonitorSpec,
    monitor: Mapping[str, Any],
    source: Mapping[str, Any] | None,
    allowed: AllowedCode,
    name: str,
) -> tuple[Decision, dict[str, Any] | None]:
    """The retraining TrainingJob (of `name`) that `due` calls for, or the decision that says why there is none."""
    if source is None:
        return Decision(False, NO_SOURCE_TRAINING_JOB, "The served model's TrainingJob is gone."), None
    origin = source["metadata"]["name"]
    candidate = retraining_job(
        source, spec.retrain, name=name, monitor=monitor["name"], drift_since=due.since, rule=due.rule or "drift"
    )
    try:
        before = parse_spec(TRAINING_JOB, source["spec"])
        after = parse_spec(TRAINING_JOB, candidate["spec"])
    except InvalidSpecError as error:
        message = f"spec.retrain.trainingJobOverrides make an invalid TrainingJob: {error}"
        return Decision(False, INVALID_OVERRIDES, message), None
    if refused := code_refused(before, allowed):
        return Decision(False, CUSTOM_MODEL_NOT_ALLOWED, f"TrainingJob {origin} runs {refused}."), None
    if problems := exceeding(before, after):
        message = f"spec.retrain.trainingJobOverrides: {'; '.join(problems)}."
        return Decision(False, OVERRIDES_EXCEED_SOURCE, message), None
    return due, candidate
