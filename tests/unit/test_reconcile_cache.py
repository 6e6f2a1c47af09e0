"""What the watches' caches keep of an object: everything a read uses, without the bulk no read needs."""

from __future__ import annotations

import copy
from typing import Any

from scaleml_operator.reconcile.cache import slim


def test_slim_drops_managed_fields_and_kopfs_copy_of_the_spec_and_keeps_the_rest() -> None:
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "churn",
            "uid": "u-1",
            "resourceVersion": "7",
            "ownerReferences": [{"uid": "p-1", "controller": True}],
            "managedFields": [{"manager": "scaleml-operator", "fieldsV1": {"f:spec": {}}}],
            "annotations": {
                "scaleml.dev/last-handled-configuration": '{"spec": {}}',
                "scaleml.dev/template-hash": "abc",
            },
        },
        "spec": {"parallelism": 2},
        "status": {"active": 2},
    }
    original = copy.deepcopy(body)

    slimmed = slim(body)

    assert body == original  # the event's own object is not changed
    assert "managedFields" not in slimmed["metadata"]
    assert slimmed["metadata"]["annotations"] == {"scaleml.dev/template-hash": "abc"}
    assert {key: slimmed["metadata"][key] for key in ("name", "uid", "resourceVersion", "ownerReferences")} == {
        key: body["metadata"][key] for key in ("name", "uid", "resourceVersion", "ownerReferences")
    }
    assert slimmed["spec"] == body["spec"]
    assert slimmed["status"] == body["status"]


def test_slim_leaves_no_empty_annotations_behind() -> None:
    body = {"metadata": {"name": "a", "annotations": {"scaleml.dev/last-handled-configuration": "{}"}}}
    assert slim(body) == {"metadata": {"name": "a"}}
