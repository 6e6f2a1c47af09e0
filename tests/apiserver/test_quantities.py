"""The operator writes quantities as the API server writes them back, so that a spelling is no change."""

from __future__ import annotations

import json

import pytest

from scaleml_api.base import canonical_quantity
from tests.support.fixtures import NamespaceFactory
from tests.support.kubectl import Kubectl

pytestmark = pytest.mark.apiserver

# Binary and decimal suffixes, fractions, exponents, amounts below 1024 in a binary suffix, and the
# nanounit Kubernetes rounds up to.
SPELLINGS = (
    "8192Mi", "8Gi", "0.5Gi", "1.5Ki", "512Ki", "10240Mi", "1536Mi", "1024", "2048", "1000", "1000k", "1500M",
    "0.5", ".5", "1000m", "1500m", "2", "+3", "0", "100u", "0.0000000001", "1e3", "1.5e3", "12e6", "2E", "1E3",
    "1Ei", "7Ei",
)  # fmt: skip


def _stored(kubectl: Kubectl, namespace: str, amounts: list[str]) -> list[str]:
    """The amounts as the API server stores them: a ResourceQuota's are a ResourceList, as a pod's are."""
    quotas = [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": f"q{index}", "namespace": namespace},
            "spec": {"hard": {"requests.memory": amount}},
        }
        for index, amount in enumerate(amounts)
    ]
    # JSON, not YAML: YAML reads 1e3 as a number.
    kubectl.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": quotas}))
    listed = json.loads(kubectl.run("get", "resourcequotas", "-n", namespace, "-o", "json").stdout)["items"]
    by_name = {quota["metadata"]["name"]: quota["spec"]["hard"]["requests.memory"] for quota in listed}
    return [by_name[f"q{index}"] for index in range(len(amounts))]


def test_what_the_operator_writes_is_stored_as_it_is_and_means_what_the_user_wrote(
    kubectl: Kubectl, make_namespace: NamespaceFactory
) -> None:
    written = [canonical_quantity(spelling, scale=-3) for spelling in SPELLINGS]
    # Stored unchanged: an apply of the same spec is no change, and no rollout.
    assert _stored(kubectl, make_namespace(), written) == written
    # The same amount as the API server makes of the user's own spelling.
    as_stored = _stored(kubectl, make_namespace(), list(SPELLINGS))
    assert [canonical_quantity(amount, scale=-3) for amount in as_stored] == written
    # Which is, but for a leading + and an upper-case E that it keeps, the API server's own rewrite.
    assert [s for s, w in zip(as_stored, written, strict=True) if s != w] == ["+3", "1E3"]
