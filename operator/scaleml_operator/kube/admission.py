"""Whether the API server itself keeps the operator off objects that are not its own.

The admission policy installed with the operator (manifests/base/admission-policy.yaml) refuses its
ServiceAccount any write to an object it did not label as its own, and any update that would give
a child another controller. Where that policy is in force for this process, a child the operator
has not seen yet is applied at once: the API server refuses it another team's object, or another
ScaleML object's child, of the same name. Elsewhere (the policy not installed, not bound to deny,
or naming another identity than the one this process runs as) each such child is read first and
applied only if absent or controlled by its owner: one more request per child.

Checked at start-up and again every resync period, so that a policy removed while the operator
runs stops being relied on within one period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Final

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from scaleml_operator.kube.client import request

log = logging.getLogger(__name__)

POLICY: Final = "scaleml-operator"
# How the policy's refusals of another's object begin (manifests/base/admission-policy.yaml).
NOT_OURS: Final = "not the ScaleML operator's object"
_POLICIES: Final = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
_BINDINGS: Final = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
_SELF_REVIEW_VERSION: Final = "authentication.k8s.io/v1"
_SELF_REVIEW: Final = f"/apis/{_SELF_REVIEW_VERSION}/selfsubjectreviews"


def guards(username: str, policy: Mapping[str, Any], binding: Mapping[str, Any]) -> bool:
    """Whether `policy`, bound by `binding`, refuses `username` the objects that are not its own.

    That takes: refusals enforced (Deny) and not waived when the policy cannot be evaluated, on updates
    of every kind in every namespace (no narrowing by the policy or its binding), for requests of
    `username` (the policy's match condition names it), with both of the policy's rules against
    another's object (their messages say NOT_OURS).
    """
    spec, bound = policy.get("spec") or {}, binding.get("spec") or {}
    constraints, resources = spec.get("matchConstraints") or {}, bound.get("matchResources") or {}
    everywhere = not _narrows(constraints) and not _narrows(resources) and not resources.get("resourceRules")
    every_update = any(
        "*" in rule.get("apiGroups", ())
        and {"*", "*/*"} & set(rule.get("resources", ()))
        and {"*", "UPDATE"} & set(rule.get("operations", ()))
        for rule in constraints.get("resourceRules") or ()
    )
    conditions = spec.get("matchConditions") or ()
    said = [rule.get("messageExpression", rule.get("message", "")) for rule in spec.get("validations") or ()]
    return (
        bound.get("policyName") == POLICY
        and "Deny" in (bound.get("validationActions") or ())
        and everywhere
        and every_update
        and spec.get("failurePolicy", "Fail") == "Fail"
        and any(f"'{username}'" in condition.get("expression", "") for condition in conditions)
        and sum(NOT_OURS in message for message in said) >= 2
    )


def _narrows(match: Mapping[str, Any]) -> bool:
    """Whether a match leaves objects out besides by its resource rules: excluded resources, or a
    namespace or object selector with terms (the API server stores an unset selector as {})."""
    selectors = (match.get("namespaceSelector") or {}, match.get("objectSelector") or {})
    return bool(match.get("excludeResourceRules")) or any(
        selector.get("matchLabels") or selector.get("matchExpressions") for selector in selectors
    )


def takeover_refused() -> bool:
    """Whether the policy is in force for this process (three requests; False when any fails)."""
    try:
        review = request("POST", _SELF_REVIEW, body={"apiVersion": _SELF_REVIEW_VERSION, "kind": "SelfSubjectReview"})
        policy = request("GET", f"{_POLICIES}/{POLICY}")
        binding = request("GET", f"{_BINDINGS}/{POLICY}")
    except ApiException as error:
        log.debug("Admission policy %s not confirmed: %s %s", POLICY, error.status, error.reason)
        return False
    except (HTTPError, OSError, ValueError) as error:  # out of reach, or no JSON: rely on nothing
        log.debug("Admission policy %s not confirmed: %s", POLICY, error)
        return False
    return guards(review.get("status", {}).get("userInfo", {}).get("username", ""), policy, binding)


class Guard:
    """What the last check found; read by every reconcile thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_force: bool | None = None  # not checked yet

    @property
    def in_force(self) -> bool:
        with self._lock:
            return bool(self._in_force)

    def check(self) -> bool:
        """Checks again (blocking: call from a thread); logs the first answer and every change."""
        found = takeover_refused()
        with self._lock:
            changed, self._in_force = found != self._in_force, found
        if changed:
            log.log(
                logging.INFO if found else logging.WARNING,
                "Admission policy %s %s: children not seen yet are %s",
                POLICY,
                "in force" if found else "not in force for this operator",
                "applied at once" if found else "read before they are applied",
            )
        return found


GUARD: Final = Guard()
