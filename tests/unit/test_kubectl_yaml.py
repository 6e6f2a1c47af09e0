"""`scaleml local` reads YAML as kubectl does (go-yaml v2's rules), not as PyYAML does.

What kubectl makes of each scalar was seen on kubectl 1.37 with the API server of tests/apiserver
(test_local_agrees has them side by side).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from scaleml_local import kubectl_yaml
from scaleml_local.state import LocalError, State, read_manifests
from tests.support.manifests import EXAMPLES


@pytest.mark.parametrize(
    ("text", "value"),
    [
        # YAML 1.1 booleans, some of which PyYAML reads as strings.
        ("y", True),
        ("N", False),
        ("on", True),
        ("Off", False),
        # Numbers PyYAML reads as strings, or as other numbers.
        ("1e3", 1000.0),
        ("1e-3", 0.001),
        ("0o17", 15),
        ("017", 15),
        ("08", 8.0),
        ("1_000", 1000),
        ("-0b11", -3),
        (".1_0", 0.1),
        ("9223372036854775808", 2**63),
        # Strings PyYAML reads as other things: a date, a sexagesimal number, a YAML 1.1 value key.
        ("2024-01-01", "2024-01-01"),
        ("1:30", "1:30"),
        ("=", "="),
        # Strings for both.
        ("12e", "12e"),
        ("1e400", "1e400"),
        ("_1", "_1"),
        ("~", None),
        ("", None),
    ],
)
def test_plain_scalars_are_read_as_kubectl_reads_them(text: str, value: Any) -> None:
    read = kubectl_yaml.scalar(text)
    assert (read, type(read)) == (value, type(value))


def test_quoted_and_tagged_scalars_stay_strings() -> None:
    assert kubectl_yaml.load_all("a: 'y'\nb: \"1e3\"\nc: !!str on\nd: !!timestamp 2024-01-01") == [
        {"a": "y", "b": "1e3", "c": "on", "d": "2024-01-01"}
    ]


def test_keys_become_the_strings_kubectl_makes_of_them() -> None:
    # As Python keys 1 and true would be one; as JSON keys they are "1" and "true".
    read = kubectl_yaml.load_all("{1: a, true: b, y: c, 1.5: d, 1000000.0: e, 1234567.0: f, 0.00001: g}")
    assert read == [{"1": "a", "true": "c", "1.5": "d", "1e+06": "e", "1.234567e+06": "f", "1e-05": "g"}]


@pytest.mark.parametrize("text", ["a: .nan", "a: -.inf", "{~: a}", "{[1]: a}"])
def test_what_json_cannot_hold_is_refused(text: str) -> None:
    with pytest.raises(kubectl_yaml.ConversionError):
        kubectl_yaml.load_all(text)


def test_merge_keys_and_anchors_are_followed() -> None:
    assert kubectl_yaml.load_all("base: &b {x: 1}\nm: {<<: *b, z: 2}") == [{"base": {"x": 1}, "m": {"x": 1, "z": 2}}]


def test_a_tag_kubectl_does_not_know_is_ignored_as_kubectl_ignores_it() -> None:
    # As sigs.k8s.io/yaml reads it: a scalar under an unknown tag is its text, a list or map as untagged.
    text = "a: !generated churn\nb: !x [1, y]\nc: !m {k: 2}\nd: !n 12\ne: !n true"
    assert kubectl_yaml.load_all(text) == [{"a": "churn", "b": [1, True], "c": {"k": 2}, "d": "12", "e": "true"}]


def test_aliases_that_expand_past_any_manifest_are_refused_before_they_take_the_memory() -> None:
    # 466 bytes that expand to 10^8 values (gigabytes, and minutes) if followed to the end.
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 8)]
    with pytest.raises(kubectl_yaml.ConversionError, match="excessive aliasing"):
        kubectl_yaml.load_all("\n".join(levels))


def test_local_apply_reads_a_manifest_as_kubectl_does(tmp_path: Path) -> None:
    """A value that is a number to kubectl is one to local mode, and a boolean one to both."""
    manifest = (EXAMPLES / "trainingjob-churn.yaml").read_text()
    learning_rate = tmp_path / "learning-rate.yaml"
    learning_rate.write_text(manifest.replace("learningRate: 0.002", "learningRate: 2e-3"))
    state = State(tmp_path / "state")
    (document,) = read_manifests([learning_rate])
    assert document["spec"]["hyperparameters"]["learningRate"] == 0.002
    state.validate(document)
    target = tmp_path / "target.yaml"
    target.write_text(manifest.replace("target: churned", "target: y"))
    with pytest.raises(LocalError, match=r"spec\.data\.target: Input should be a valid string"):
        state.validate(*read_manifests([target]))


def test_a_list_is_read_as_its_items(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("kind: List\napiVersion: v1\nitems:\n- {kind: A}\n- {kind: B}\n")
    assert [document["kind"] for document in read_manifests([path])] == ["A", "B"]


@pytest.mark.parametrize("text", ["[a, b]", "just text"])
def test_a_document_that_is_not_an_object_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(LocalError, match="must be an object"):
        read_manifests([path])


def test_nan_is_not_a_number_kubectl_sends(tmp_path: Path) -> None:
    path = tmp_path / "nan.yaml"
    path.write_text("a: .nan")
    with pytest.raises(LocalError, match="unsupported value"):
        read_manifests([path])
    assert math.isnan(kubectl_yaml.scalar(".NaN"))
