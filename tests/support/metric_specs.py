"""Autoscaling metrics a ModelDeployment takes: one of each shape, near the edges of what the HPA accepts.

The models and the CRD accept every one of them, and the HPA the operator builds from them is one
the API server accepts (tests/apiserver/test_autoscaling_metrics.py); tests/support/invalid_specs.py
has the shapes they refuse.
"""

from __future__ import annotations

from typing import Any, Final

from scaleml_api.base import quantity_value

VALID_METRICS: Final[tuple[dict[str, Any], ...]] = (
    {
        "type": "Pods",
        "pods": {
            "metric": {"name": "nv_inference_queue_duration_us"},
            "target": {"type": "AverageValue", "averageValue": "100m"},
        },
    },
    {
        "type": "Pods",
        "pods": {
            "metric": {"name": "requests_per_second", "selector": {"matchLabels": {"model": "churn"}}},
            "target": {"type": "AverageValue", "averageValue": 20},
        },
    },
    {
        "type": "Pods",
        "pods": {
            "metric": {
                "name": "triton:queue_compute_ratio",
                "selector": {
                    "matchExpressions": [
                        {"key": "scaleml.dev/model", "operator": "In", "values": ["churn", "churn-v2"]},
                        {"key": "stage", "operator": "NotIn", "values": ["canary"]},
                        {"key": "gpu", "operator": "Exists"},
                        {"key": "example.com/drain", "operator": "DoesNotExist"},
                    ]
                },
            },
            "target": {"type": "AverageValue", "averageValue": "1.5k"},
        },
    },
    {
        "type": "External",
        "external": {
            "metric": {"name": "pubsub.googleapis.com|subscription|num_undelivered_messages"},
            "target": {"type": "Value", "value": "1e3"},
        },
    },
    {
        "type": "External",
        "external": {
            "metric": {
                "name": "queue depth (requests)",
                "selector": {
                    "matchLabels": {"queue": "churn-requests"},
                    "matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}],
                },
            },
            "target": {"type": "AverageValue", "averageValue": ".5"},
        },
    },
    # Any path segment name but "." and "..", as the HPA takes it.
    {"type": "External", "external": {"metric": {"name": "..."}, "target": {"type": "Value", "value": "2Gi"}}},
)


_VALUES: Final = ("value", "averageValue")


def meaning(metric: dict[str, Any]) -> dict[str, Any]:
    """What a metric asks for, whoever wrote it out: no empty selector parts, quantities as numbers."""
    source = metric[metric["type"].lower()]
    selector = {key: value for key, value in source["metric"].get("selector", {}).items() if value}
    expressions = [
        {key: value for key, value in expression.items() if value}
        for expression in selector.get("matchExpressions", [])
    ]
    target = {key: quantity_value(str(value)) if key in _VALUES else value for key, value in source["target"].items()}
    return {
        "type": metric["type"],
        "name": source["metric"]["name"],
        "selector": {**selector, **({"matchExpressions": expressions} if expressions else {})},
        "target": target,
    }
