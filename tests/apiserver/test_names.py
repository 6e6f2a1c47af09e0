"""Every name field refuses what is not a name at admission, naming the field (a real kube-apiserver)."""

from __future__ import annotations

import pytest

from tests.support.kubectl import Kubectl
from tests.support.name_fields import HOSTILE_NAMES, NameField, name_fields

pytestmark = pytest.mark.apiserver


@pytest.mark.parametrize("value", HOSTILE_NAMES)
@pytest.mark.parametrize("field", name_fields(), ids=lambda f: f"{f.kind}-{f.path}")
def test_admission_refuses_a_name_field_that_is_not_a_name(
    field: NameField, value: str, scaleml_installed: Kubectl, namespace: str
) -> None:
    result = scaleml_installed.apply(field.manifest(value), "-n", namespace, "--dry-run=server", check=False)
    assert result.returncode != 0, f"accepted {field.path}={value!r}"
    assert field.path in result.stderr, result.stderr
