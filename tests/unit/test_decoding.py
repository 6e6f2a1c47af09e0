"""Reading what the API server sends however deep it is nested (scaleml_operator.decoding)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scaleml_api.v1alpha1 import TRAINING_JOB
from scaleml_api.validation import InvalidSpecError, parse_spec
from scaleml_operator import decoding
from scaleml_operator.decoding import MAX_DEPTH, TOO_DEEP, decode_shallow
from tests.support.manifests import example

# The API server stores objects up to 10,000 levels deep: this one sits just inside, under model.params.
DEPTH = 9_990


def _deep_event() -> str:
    """A watch event, as the API server sends it, of a TrainingJob with a value DEPTH levels deep."""
    job = example("TrainingJob")
    job["spec"]["model"]["params"]["extra"] = "@@"
    event = json.dumps({"type": "ADDED", "object": job})
    return event.replace('"@@"', '{"a":' * DEPTH + "1" + "}" * DEPTH)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """decoding.install() for the test only: json's own decoder comes back after it."""
    monkeypatch.setattr(json, "_default_decoder", json._default_decoder)  # type: ignore[attr-defined]
    decoding.install()


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, dict):
        (value,) = value.values()
        depth += 1
    return depth


def test_json_alone_cannot_read_the_event() -> None:
    # What stopped the operator: kopf decodes each watch event with json.loads.
    with pytest.raises(RecursionError):
        json.loads(_deep_event())


@pytest.mark.usefixtures("installed")
def test_json_loads_reads_the_event_keeping_its_first_levels() -> None:
    event = json.loads(_deep_event())

    job = event["object"]
    assert job["metadata"]["name"] == "churn"
    assert (
        job["spec"]["model"]["params"]["hiddenSizes"]
        == example("TrainingJob")["spec"]["model"]["params"]["hiddenSizes"]
    )
    extra = job["spec"]["model"]["params"]["extra"]
    # The event is level 1, the object 2, spec 3, model 4, params 5, extra's value 6.
    assert _depth(extra) == MAX_DEPTH - 5
    cut = extra
    while isinstance(cut, dict):
        (cut,) = cut.values()
    assert cut == TOO_DEEP


@pytest.mark.usefixtures("installed")
def test_the_object_read_is_reported_as_an_invalid_spec_naming_the_field() -> None:
    job = json.loads(_deep_event())["object"]

    with pytest.raises(InvalidSpecError) as error:
        parse_spec(TRAINING_JOB, job["spec"])

    assert "spec.model.params.extra:" in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        "[]",
        '""',
        "0",
        "-12.5e-3",
        "null",
        ' { "a" : [1, 2.5, "x\\u00e9\\n\\"", true, false, null, {}, [], {"b": {"c": []}}], "d": -Infinity, "e": NaN } ',
        json.dumps({kind: example(kind) for kind in ("TrainingJob", "ModelDeployment", "DriftMonitor")}),
    ],
)
def test_what_json_reads_is_read_the_same(text: str) -> None:
    assert json.dumps(decode_shallow(text)) == json.dumps(json.loads(text))


@pytest.mark.parametrize(
    "text", ["", "{", "[1,]", '{"a" 1}', '{"a": 1,}', "[1 2]", "{1: 2}", "[1] x", '{"a": 1}}', "nul", "["]
)
def test_what_json_refuses_is_refused(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        decode_shallow(text)


def test_lists_are_cut_at_the_same_depth() -> None:
    read = decode_shallow("[" * DEPTH + "]" * DEPTH + "\n")
    depth = 0
    while read != TOO_DEEP:
        (read,) = read
        depth += 1
    assert depth == MAX_DEPTH
