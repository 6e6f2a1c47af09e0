"""Manifests the API must refuse, each with the field its error has to name.

The API server rejects every one of them (schema and CEL), and the operator's models reject every
one that concerns the spec, so the two never disagree about what is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.manifests import Manifest, example, merged


@dataclass(frozen=True)
class InvalidCase:
    id: str
    kind: str
    changes: Manifest
    # The path the error message must name, as the API server prints it.
    field: str

    def manifest(self) -> Manifest:
        return merged(example(self.kind), self.changes)


TJ, MD, DM = "TrainingJob", "ModelDeployment", "DriftMonitor"

# A ModelDeployment's first autoscaling metric, and a source of it that is valid.
_METRIC = "spec.autoscaling.metrics[0]"
_QUEUE: Manifest = {"metric": {"name": "queue"}, "target": {"type": "AverageValue", "averageValue": "10"}}


def _metric(metric: Manifest) -> Manifest:
    return {"spec": {"autoscaling": {"metrics": [metric]}}}


def _pods(source: Manifest | None = None, **parts: Manifest) -> Manifest:
    """A Pods metric: `source` whole, or the valid one with `parts` (metric, target) in place of its own."""
    return _metric({"type": "Pods", "pods": source if source is not None else {**_QUEUE, **parts}})


def _external(**parts: Manifest) -> Manifest:
    return _metric({"type": "External", "external": {**_QUEUE, **parts}})


CASES = (
    InvalidCase(
        "toleration-without-key-or-exists",
        TJ,
        {"spec": {"scheduling": {"tolerations": [{"effect": "NoSchedule"}]}}},
        "spec.scheduling.tolerations[0].operator",
    ),
    InvalidCase(
        "toleration-seconds-without-noexecute",
        TJ,
        {"spec": {"scheduling": {"tolerations": [{"key": "spot", "effect": "NoSchedule", "tolerationSeconds": 60}]}}},
        "spec.scheduling.tolerations[0].tolerationSeconds",
    ),
    # Names name the objects' Services, which must be DNS-1035 labels.
    InvalidCase("name-leading-digit", TJ, {"metadata": {"name": "2024-churn"}}, "metadata.name"),
    InvalidCase("name-with-dot", MD, {"metadata": {"name": "churn.v2"}}, "metadata.name"),
    InvalidCase("name-too-long", DM, {"metadata": {"name": "d" * 53}}, "metadata.name"),
    InvalidCase("cpu-negative", MD, {"spec": {"resources": {"cpu": "-1"}}}, "spec.resources.cpu"),
    InvalidCase(
        "hpa-without-metrics",
        MD,
        {"spec": {"autoscaling": {"targetCPUUtilization": 0, "metrics": []}}},
        "spec.autoscaling.targetCPUUtilization",
    ),
    InvalidCase("hpa-object-metric", MD, _metric({"type": "Object", "pods": _QUEUE}), _METRIC + ".type"),
    InvalidCase("hpa-metric-without-its-source", MD, _metric({"type": "Pods", "external": _QUEUE}), _METRIC + ".type"),
    # Inside a metric: what the HPA's own validation refuses, or the HPA controller could not use.
    InvalidCase("hpa-pods-without-target", MD, _pods({"metric": {"name": "queue"}}), _METRIC + ".pods.target"),
    InvalidCase("hpa-target-without-type", MD, _pods(target={"averageValue": "1"}), _METRIC + ".pods.target.type"),
    InvalidCase(
        "hpa-pods-utilization",
        MD,
        _pods(target={"type": "Utilization", "averageUtilization": 50}),
        _METRIC + ".pods.target.type",
    ),
    InvalidCase("hpa-pods-value", MD, _pods(target={"type": "Value", "value": "5"}), _METRIC + ".pods.target.type"),
    InvalidCase(
        "hpa-external-utilization",
        MD,
        _external(target={"type": "Utilization", "averageUtilization": 50}),
        _METRIC + ".external.target.type",
    ),
    InvalidCase(
        "hpa-target-type-without-its-value",
        MD,
        _external(target={"type": "AverageValue", "value": "5"}),
        _METRIC + ".external.target.averageValue",
    ),
    InvalidCase(
        "hpa-target-two-values",
        MD,
        _external(target={"type": "Value", "value": "5", "averageValue": "1"}),
        _METRIC + ".external.target.averageValue",
    ),
    InvalidCase(
        "hpa-average-value-not-a-quantity",
        MD,
        _pods(target={"type": "AverageValue", "averageValue": "fast"}),
        _METRIC + ".pods.target.averageValue",
    ),
    InvalidCase(
        "hpa-average-value-zero",
        MD,
        _pods(target={"type": "AverageValue", "averageValue": 0}),
        _METRIC + ".pods.target.averageValue",
    ),
    InvalidCase(
        "hpa-value-negative",
        MD,
        _external(target={"type": "Value", "value": "-500m"}),
        _METRIC + ".external.target.value",
    ),
    InvalidCase("hpa-metric-without-name", MD, _pods(metric={}), _METRIC + ".pods.metric.name"),
    InvalidCase(
        "hpa-metric-name-with-slash", MD, _external(metric={"name": "queue/depth"}), _METRIC + ".external.metric.name"
    ),
    InvalidCase("hpa-metric-name-dot-dot", MD, _pods(metric={"name": ".."}), _METRIC + ".pods.metric.name"),
    InvalidCase(
        "hpa-selector-bad-key",
        MD,
        _pods(metric={"name": "queue", "selector": {"matchLabels": {"model name": "churn"}}}),
        _METRIC + ".pods.metric.selector.matchLabels",
    ),
    InvalidCase(
        "hpa-selector-bad-value",
        MD,
        _external(metric={"name": "queue", "selector": {"matchLabels": {"queue": "churn requests"}}}),
        _METRIC + ".external.metric.selector.matchLabels.queue",
    ),
    InvalidCase(
        "hpa-selector-unknown-operator",
        MD,
        _pods(metric={"name": "queue", "selector": {"matchExpressions": [{"key": "model", "operator": "Equals"}]}}),
        _METRIC + ".pods.metric.selector.matchExpressions[0].operator",
    ),
    InvalidCase(
        "hpa-selector-in-without-values",
        MD,
        _pods(metric={"name": "queue", "selector": {"matchExpressions": [{"key": "model", "operator": "In"}]}}),
        _METRIC + ".pods.metric.selector.matchExpressions[0].values",
    ),
    InvalidCase(
        "hpa-selector-exists-with-values",
        MD,
        _external(
            metric={
                "name": "queue",
                "selector": {"matchExpressions": [{"key": "model", "operator": "Exists", "values": ["churn"]}]},
            }
        ),
        _METRIC + ".external.metric.selector.matchExpressions[0].values",
    ),
    InvalidCase(
        "hpa-selector-bad-value-in-values",
        MD,
        _pods(
            metric={
                "name": "queue",
                "selector": {"matchExpressions": [{"key": "model", "operator": "NotIn", "values": ["-churn"]}]},
            }
        ),
        _METRIC + ".pods.metric.selector.matchExpressions[0].values[0]",
    ),
    InvalidCase(
        "hpa-selector-key-with-long-prefix",
        MD,
        _pods(
            metric={
                "name": "queue",
                "selector": {"matchExpressions": [{"key": "a" * 254 + "/model", "operator": "Exists"}]},
            }
        ),
        _METRIC + ".pods.metric.selector.matchExpressions[0].key",
    ),
    InvalidCase("memory-beyond-int64", TJ, {"spec": {"resources": {"memory": "1e309"}}}, "spec.resources.memory"),
    InvalidCase("workers-zero", TJ, {"spec": {"resources": {"workers": 0}}}, "spec.resources.workers"),
    InvalidCase("workers-not-a-number", TJ, {"spec": {"resources": {"workers": "two"}}}, "spec.resources.workers"),
    InvalidCase(
        "workers-outside-elastic-range",
        TJ,
        {"spec": {"resources": {"workers": 5}, "elastic": {"minWorkers": 1, "maxWorkers": 4}}},
        "spec.resources.workers",
    ),
    InvalidCase(
        "elastic-min-above-max",
        TJ,
        {"spec": {"resources": {"workers": 2}, "elastic": {"minWorkers": 3, "maxWorkers": 2}}},
        "spec.elastic.minWorkers",
    ),
    InvalidCase("unknown-architecture", TJ, {"spec": {"model": {"architecture": "lstm"}}}, "spec.model.architecture"),
    # model.params: scalars and lists of scalars, bounded (the API server's own names for the field
    # end in [0] where it blames a list's item; the operator's name the parameter).
    InvalidCase(
        "params-nested-map",
        TJ,
        {"spec": {"model": {"params": {"extra": {"a": {"a": {"a": 1}}}}}}},
        "spec.model.params.extra",
    ),
    InvalidCase(
        "params-list-of-lists",
        TJ,
        {"spec": {"model": {"params": {"hiddenSizes": [[64]]}}}},
        "spec.model.params.hiddenSizes",
    ),
    InvalidCase(
        "params-list-too-long",
        TJ,
        {"spec": {"model": {"params": {"hiddenSizes": [64] * 65}}}},
        "spec.model.params.hiddenSizes",
    ),
    InvalidCase(
        "params-string-too-long",
        TJ,
        {"spec": {"model": {"params": {"activation": "x" * 257}}}},
        "spec.model.params.activation",
    ),
    InvalidCase(
        "params-too-many",
        TJ,
        {"spec": {"model": {"params": {f"p{i}": 1 for i in range(33)}}}},
        "spec.model.params",
    ),
    InvalidCase(
        "custom-without-entrypoint", TJ, {"spec": {"model": {"architecture": "custom"}}}, "spec.model.entrypoint"
    ),
    InvalidCase("unknown-precision", TJ, {"spec": {"precision": "fp8"}}, "spec.precision"),
    InvalidCase(
        "fp16-without-gpu", TJ, {"spec": {"precision": "fp16", "resources": {"gpusPerWorker": 0}}}, "spec.precision"
    ),
    InvalidCase("missing-target", TJ, {"spec": {"data": {"target": None}}}, "spec.data.target"),
    InvalidCase(
        "zero-learning-rate",
        TJ,
        {"spec": {"hyperparameters": {"learningRate": 0}}},
        "spec.hyperparameters.learningRate",
    ),
    InvalidCase(
        "sensitive-feature-is-the-target",
        TJ,
        {"spec": {"evaluation": {"sensitiveFeatures": ["churned"]}}},
        "spec.evaluation.sensitiveFeatures",
    ),
    InvalidCase(
        "min-group-size-zero", TJ, {"spec": {"evaluation": {"minGroupSize": 0}}}, "spec.evaluation.minGroupSize"
    ),
    InvalidCase("validation-split-one", TJ, {"spec": {"data": {"validationSplit": 1.0}}}, "spec.data.validationSplit"),
    InvalidCase("memory-not-a-quantity", TJ, {"spec": {"resources": {"memory": "lots"}}}, "spec.resources.memory"),
    InvalidCase(
        "ttl-past-int32",
        TJ,
        {"spec": {"runPolicy": {"ttlSecondsAfterFinished": 2**31}}},
        "spec.runPolicy.ttlSecondsAfterFinished",
    ),
    # The documented grammar allows a fractional exponent; Kubernetes' parser does not.
    InvalidCase("cpu-fractional-exponent", TJ, {"spec": {"resources": {"cpu": "1e1.5"}}}, "spec.resources.cpu"),
    InvalidCase(
        "memory-exponent-overflow",
        TJ,
        {"spec": {"resources": {"memory": "1e9999999999999999999"}}},
        "spec.resources.memory",
    ),
    InvalidCase(
        "procs-differ-from-gpus",
        TJ,
        {"spec": {"resources": {"gpusPerWorker": 2, "procsPerWorker": 1}}},
        "spec.resources.procsPerWorker",
    ),
    InvalidCase("reserved-env", TJ, {"spec": {"env": [{"name": "MASTER_ADDR", "value": "x"}]}}, "spec.env[0].name"),
    InvalidCase(
        "reserved-torchrun-env",
        TJ,
        {"spec": {"env": [{"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "0"}]}},
        "spec.env[0].name",
    ),
    # env[].valueFrom is a core/v1 EnvVarSource: exactly one source, each checked as the Pod API does.
    InvalidCase(
        "env-value-from-empty", TJ, {"spec": {"env": [{"name": "TOKEN", "valueFrom": {}}]}}, "spec.env[0].valueFrom"
    ),
    InvalidCase(
        "env-value-from-misspelt",
        TJ,
        {"spec": {"env": [{"name": "TOKEN", "valueFrom": {"secretRef": {"name": "hf", "key": "token"}}}]}},
        "spec.env[0].valueFrom.secretRef",
    ),
    InvalidCase(
        "env-value-from-two-sources",
        TJ,
        {
            "spec": {
                "env": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {
                            "secretKeyRef": {"name": "hf", "key": "token"},
                            "configMapKeyRef": {"name": "hf", "key": "token"},
                        },
                    }
                ]
            }
        },
        "spec.env[0].valueFrom",
    ),
    InvalidCase(
        "env-secret-key-climbs",
        TJ,
        {"spec": {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "..token"}}}]}},
        "spec.env[0].valueFrom.secretKeyRef.key",
    ),
    InvalidCase(
        "env-config-map-name-not-a-name",
        TJ,
        {"spec": {"env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "My_Config", "key": "mode"}}}]}},
        "spec.env[0].valueFrom.configMapKeyRef.name",
    ),
    InvalidCase(
        "env-field-ref-unsupported-path",
        TJ,
        {"spec": {"env": [{"name": "IMAGE", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers[0].image"}}}]}},
        "spec.env[0].valueFrom.fieldRef.fieldPath",
    ),
    InvalidCase(
        "env-resource-ref-cpu-in-bytes",
        TJ,
        {
            "spec": {
                "env": [
                    {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}}}
                ]
            }
        },
        "spec.env[0].valueFrom.resourceFieldRef.divisor",
    ),
    InvalidCase(
        "source-escapes-volume", TJ, {"spec": {"data": {"source": "churn/../../etc/passwd"}}}, "spec.data.source"
    ),
    InvalidCase("unknown-field", TJ, {"spec": {"resources": {"gpu": 1}}}, "spec.resources.gpu"),
    InvalidCase("target-is-a-feature", TJ, {"spec": {"data": {"features": ["churned", "age"]}}}, "spec.data.features"),
    InvalidCase(
        "reserved-pod-label",
        TJ,
        {"spec": {"podMetadata": {"labels": {"app.kubernetes.io/name": "mine"}}}},
        "spec.podMetadata.labels",
    ),
    # Label and annotation keys: the name after the prefix is at most 63 characters, the prefix 253.
    InvalidCase(
        "node-selector-key-name-too-long",
        TJ,
        {"spec": {"scheduling": {"nodeSelector": {"node.example.com/" + "gpu-" * 17 + "a1": "true"}}}},
        "spec.scheduling.nodeSelector",
    ),
    InvalidCase(
        "pod-label-key-name-too-long",
        TJ,
        {"spec": {"podMetadata": {"labels": {"team.example.com/" + "cost-center-" * 6 + "x": "ml"}}}},
        "spec.podMetadata.labels",
    ),
    InvalidCase(
        "pod-annotation-key-prefix-too-long",
        TJ,
        {
            "spec": {
                "podMetadata": {"annotations": {"a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + "/x": ""}}
            }
        },
        "spec.podMetadata.annotations",
    ),
    InvalidCase(
        "toleration-key-name-too-long",
        TJ,
        {"spec": {"scheduling": {"tolerations": [{"key": "t" * 70, "operator": "Exists"}]}}},
        "spec.scheduling.tolerations[0].key",
    ),
    InvalidCase(
        "toleration-key-prefix-too-long",
        TJ,
        {
            "spec": {
                "scheduling": {"tolerations": [{"key": "a" * 63 + ("." + "b" * 63) * 3 + "/x", "operator": "Exists"}]}
            }
        },
        "spec.scheduling.tolerations[0].key",
    ),
    InvalidCase(
        "pod-label-value-too-long",
        TJ,
        {"spec": {"podMetadata": {"labels": {"team": "v" * 64}}}},
        "spec.podMetadata.labels.team",
    ),
    # The API server refuses pods whose annotations take more than 256 KiB; 3 bytes a character here.
    InvalidCase(
        "pod-annotations-too-large",
        TJ,
        {"spec": {"podMetadata": {"annotations": {f"note-{i}": "\u20ac" * 4096 for i in range(21)}}}},
        "spec.podMetadata.annotations",
    ),
    InvalidCase("name-too-long", TJ, {"metadata": {"name": "a" * 60}}, "metadata.name"),
    InvalidCase(
        "two-model-sources",
        MD,
        {"spec": {"model": {"repository": {"volumeClaim": "models", "modelName": "churn"}}}},
        "spec.model",
    ),
    InvalidCase("no-model-source", MD, {"spec": {"model": {"fromTrainingJob": None}}}, "spec.model"),
    InvalidCase("version-not-latest", MD, {"spec": {"model": {"version": "newest"}}}, "spec.model.version"),
    InvalidCase(
        "preferred-batch-above-max",
        MD,
        {"spec": {"batching": {"maxBatchSize": 64, "preferredBatchSizes": [16, 128]}}},
        "spec.batching.preferredBatchSizes",
    ),
    InvalidCase("gpu-instances-without-gpus", MD, {"spec": {"resources": {"gpus": 0}}}, "spec.instances.kind"),
    InvalidCase(
        "autoscaling-min-above-max",
        MD,
        {"spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
        "spec.autoscaling.minReplicas",
    ),
    InvalidCase("capture-without-volume", MD, {"spec": {"capture": {"volumeClaim": None}}}, "spec.capture.volumeClaim"),
    InvalidCase("replicas-negative", MD, {"spec": {"replicas": -1}}, "spec.replicas"),
    InvalidCase(
        "gates-on-a-repository",
        MD,
        {
            "spec": {
                "model": {"fromTrainingJob": None, "repository": {"volumeClaim": "models", "modelName": "churn"}},
                "promotion": {"gates": {"minMetric": 0.9}},
            }
        },
        "spec.promotion.gates",
    ),
    InvalidCase(
        "gates-min-above-max",
        MD,
        {"spec": {"promotion": {"gates": {"minMetric": 3, "maxMetric": 2}}}},
        "spec.promotion.gates.minMetric",
    ),
    InvalidCase(
        "gates-disparate-impact-above-one",
        MD,
        {"spec": {"promotion": {"gates": {"minDisparateImpactRatio": 1.5}}}},
        "spec.promotion.gates.minDisparateImpactRatio",
    ),
    InvalidCase(
        "gates-unknown-metric",
        MD,
        {"spec": {"promotion": {"gates": {"metric": "loss"}}}},
        "spec.promotion.gates.metric",
    ),
    InvalidCase(
        "capture-kept-under-a-minute",
        MD,
        {"spec": {"capture": {"retention": {"maxAge": "30s"}}}},
        "spec.capture.retention.maxAge",
    ),
    InvalidCase(
        "capture-max-bytes-zero",
        MD,
        {"spec": {"capture": {"retention": {"maxBytes": 0}}}},
        "spec.capture.retention.maxBytes",
    ),
    InvalidCase(
        "capture-max-bytes-fraction",
        MD,
        {"spec": {"capture": {"retention": {"maxBytes": "1.5Gi"}}}},
        "spec.capture.retention.maxBytes",
    ),
    InvalidCase(
        "capture-max-bytes-negative",
        MD,
        {"spec": {"capture": {"retention": {"maxBytes": "-10Gi"}}}},
        "spec.capture.retention.maxBytes",
    ),
    InvalidCase("check-every-five-seconds", DM, {"spec": {"window": {"every": "5s"}}}, "spec.window.every"),
    InvalidCase(
        "unknown-profile-sample", TJ, {"spec": {"output": {"profileSample": "some"}}}, "spec.output.profileSample"
    ),
    InvalidCase("duration-in-words", DM, {"spec": {"window": {"every": "5 minutes"}}}, "spec.window.every"),
    InvalidCase("p-value-above-one", DM, {"spec": {"thresholds": {"pValue": 1.5}}}, "spec.thresholds.pValue"),
    InvalidCase("unknown-test", DM, {"spec": {"tests": {"numeric": "t-test"}}}, "spec.tests.numeric"),
    InvalidCase(
        "two-references", DM, {"spec": {"reference": {"path": "p.json", "volumeClaim": "models"}}}, "spec.reference"
    ),
    InvalidCase("missing-target", DM, {"spec": {"target": None}}, "spec.target"),
)
