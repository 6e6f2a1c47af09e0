"""Admission policies a test puts in the way of writes: a cluster's own rules, which no CRD can know."""

from __future__ import annotations

from typing import Any

Manifest = dict[str, Any]


def refusal(
    name: str, namespace: str, rule: Manifest, expression: str, message: str, reason: str | None = None
) -> tuple[Manifest, Manifest]:
    """A ValidatingAdmissionPolicy `name` and its binding: in `namespace`, a write that `rule` matches (a
    resourceRule: apiGroups, apiVersions, operations, resources) is refused with `message` unless the CEL
    `expression` holds, with the HTTP status of `reason` (by default Invalid: 422)."""
    validation = {"expression": expression, "message": message, **({"reason": reason} if reason else {})}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rule]},
            "validations": [validation],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    return policy, binding
