"""When the operator relies on its admission policy to refuse it others' objects (kube.admission.guards).

Relying on it wrongly would let a new child's apply overwrite a tenant's object of the same name; so
every way the policy can be weakened (warn only, narrowed, failing open, naming another identity,
without its takeover rules) must make the operator read children before applying them again.
"""

from __future__ import annotations

from typing import Any

import pytest

from scaleml_operator.kube.admission import NOT_OURS, guards
from tests.support.kustomize import BASE, build, find
from tests.support.manifests import Manifest, merged

OPERATOR = "system:serviceaccount:scaleml-system:scaleml-operator"
EVERY_KIND = {"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}


@pytest.fixture(scope="module")
def shipped() -> tuple[Manifest, Manifest]:
    objects = build(BASE)
    return find(objects, "ValidatingAdmissionPolicy", "scaleml-operator"), find(
        objects, "ValidatingAdmissionPolicyBinding", "scaleml-operator"
    )


def test_the_shipped_policy_guards_the_operator_as_the_api_server_stores_it(shipped: tuple[Manifest, Manifest]) -> None:
    policy, binding = shipped
    assert guards(OPERATOR, policy, binding)
    # The API server fills in empty selectors and the match policy: they narrow nothing.
    stored = merged(
        policy,
        {"spec": {"matchConstraints": {"namespaceSelector": {}, "objectSelector": {}, "matchPolicy": "Equivalent"}}},
    )
    assert guards(OPERATOR, stored, binding)


def _without_takeover_rules(policy: Manifest) -> Manifest:
    rules = [rule for rule in policy["spec"]["validations"] if NOT_OURS not in rule.get("messageExpression", "")]
    return {**policy, "spec": {**policy["spec"], "validations": rules}}


WEAKENED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("warn only", {}, {"spec": {"validationActions": ["Warn", "Audit"]}}),
    ("binding of another policy", {}, {"spec": {"policyName": "other"}}),
    (
        "binding narrowed to some namespaces",
        {},
        {"spec": {"matchResources": {"namespaceSelector": {"matchLabels": {"team": "a"}}}}},
    ),
    (
        "binding narrowed to some kinds",
        {},
        {"spec": {"matchResources": {"resourceRules": [{"apiGroups": ["batch"], "resources": ["jobs"]}]}}},
    ),
    ("failing open", {"spec": {"failurePolicy": "Ignore"}}, {}),
    (
        "objects left out by a selector",
        {"spec": {"matchConstraints": {"objectSelector": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}}},
        {},
    ),
    (
        "only some kinds",
        {"spec": {"matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "resources": ["jobs"]}]}}},
        {},
    ),
    (
        "creates only",
        {
            "spec": {
                "matchConstraints": {
                    "resourceRules": [{"apiGroups": ["*"], "resources": ["*/*"], "operations": ["CREATE"]}]
                }
            }
        },
        {},
    ),
    (
        "another identity",
        {"spec": {"matchConditions": [{"name": "x", "expression": "request.userInfo.username == 'someone'"}]}},
        {},
    ),
]


@pytest.mark.parametrize(
    ("policy_change", "binding_change"), [case[1:] for case in WEAKENED], ids=[c[0] for c in WEAKENED]
)
def test_a_weakened_policy_is_not_relied_on(
    shipped: tuple[Manifest, Manifest], policy_change: dict[str, Any], binding_change: dict[str, Any]
) -> None:
    policy, binding = shipped
    assert not guards(OPERATOR, merged(policy, policy_change), merged(binding, binding_change))


def test_a_policy_without_its_takeover_rules_is_not_relied_on(shipped: tuple[Manifest, Manifest]) -> None:
    policy, binding = shipped
    assert not guards(OPERATOR, _without_takeover_rules(policy), binding)
