"""What a user may do, as `kubectl auth can-i` answers it, checked against a table of expectations."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tests.support.kubectl import Kubectl

# (allowed, verb, resource, subresource, namespace or None for all namespaces[, resource name])
Case = tuple[bool, str, str, str, str | None] | tuple[bool, str, str, str, str | None, str]


def can(
    kubectl: Kubectl, user: str, verb: str, resource: str, subresource: str, namespace: str | None, name: str
) -> bool:
    scope = ["-n", namespace] if namespace else ["-A"]
    # (kubectl reads RESOURCE/NAME as a resource name: a subresource goes in its own flag.)
    flags = [f"--subresource={subresource}"] if subresource else []
    target = f"{resource}/{name}" if name else resource
    result = kubectl.run("auth", "can-i", verb, target, *flags, *scope, f"--as={user}", check=False)
    assert result.stdout.strip() in {"yes", "no"}, result.stderr
    return result.stdout.strip() == "yes"


def wrong_answers(kubectl: Kubectl, user: str, cases: Sequence[Case]) -> list[str]:
    """The cases where `user`'s access differs from the table, in words; empty when all agree."""
    full = [(*case, "")[:6] for case in cases]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda case: can(kubectl, user, *case[1:]), full))
    return [
        f"{'cannot' if allowed else 'can'} {verb} {resource} {subresource} {name} in {namespace or 'all namespaces'}"
        for (allowed, verb, resource, subresource, namespace, name), answer in zip(full, answers, strict=True)
        if answer != allowed
    ]
