"""The operator's kopf diff-base: the same essence as kopf's own, from less copying."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest

from scaleml_operator.handlers.diffbase import LightDiffBaseStorage

PREFIX, KEY = "scaleml.dev", "last-handled-configuration"


def _body() -> dict[str, Any]:
    return {
        "apiVersion": "scaleml.dev/v1alpha1",
        "kind": "DriftMonitor",
        "metadata": {
            "name": "churn",
            "namespace": "ml",
            "uid": "9c0d",
            "resourceVersion": "812",
            "generation": 3,
            "labels": {"team": "risk"},
            "annotations": {f"{PREFIX}/{KEY}": '{"spec":{}}', "note": "kept"},
            "ownerReferences": [{"kind": "Application", "name": "ml", "uid": "a1"}],
            "finalizers": [f"{PREFIX}/finalizer"],
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {"f:window": {}}}}] * 5,
        },
        "spec": {"target": {"name": "churn"}, "window": {"rows": 500}},
        "status": {"lastCheckTime": "2026-12-04T10:00:00Z", "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.mark.parametrize(
    "extra_fields",
    [
        [],
        ["spec"],
        ["status.lastCheckTime", "status.driftSince"],
        [("status", "conditions")],
        ["metadata.labels.team"],
        ["spec.window"],
    ],
)
def test_the_essence_is_kopfs_own(extra_fields: list[kopf.FieldSpec]) -> None:
    raw = _body()
    body = kopf.Body(cast(kopf.RawBody, raw))
    ours = LightDiffBaseStorage(prefix=PREFIX, key=KEY).build(body=body, extra_fields=extra_fields)
    assert ours == kopf.AnnotationsDiffBaseStorage(prefix=PREFIX, key=KEY).build(body=body, extra_fields=extra_fields)
    # A copy: the event's body stays as it came, whatever becomes of the essence.
    ours["spec"]["window"]["rows"] = 1
    assert raw == _body()
