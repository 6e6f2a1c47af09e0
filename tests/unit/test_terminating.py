"""Objects of a namespace being deleted go with it: after the API server refused a write there because the
namespace terminates, the runs of the objects made before that are skipped, without a request."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scaleml_operator.config import OperatorConfig
from scaleml_operator.kube import apply as kube
from scaleml_operator.reconcile import loop, terminating
from scaleml_operator.reconcile.loop import Context
from scaleml_operator.reconcile.terminating import HOLD_SECONDS, Terminating, created
from scaleml_operator.reconcile.trainingjob import RECONCILER
from tests.support.manifests import example

REFUSED_AT = datetime(2026, 12, 6, 4, 0, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _at(seconds_after_refusal: float) -> datetime:
    return datetime.fromtimestamp(REFUSED_AT + seconds_after_refusal, UTC)


def test_objects_made_before_the_refusal_go_with_the_namespace_and_those_made_after_do_not() -> None:
    clock = Clock(REFUSED_AT)
    seen = Terminating(clock)
    assert not seen.goes_with("ml", _at(-60))
    seen.refused("ml")
    clock.now += 5
    assert seen.goes_with("ml", _at(-60))
    # A namespace of the same name, made anew once the old one was gone: its objects run.
    assert not seen.goes_with("ml", _at(3))
    assert not seen.goes_with("other", _at(-60))
    assert not seen.goes_with("ml", None)


def test_a_record_is_dropped_a_while_after_the_last_refusal() -> None:
    clock = Clock(REFUSED_AT)
    seen = Terminating(clock)
    seen.refused("ml")
    clock.now += HOLD_SECONDS + 1
    # Should the namespace still terminate, the next run's write is refused again and recorded anew.
    assert not seen.goes_with("ml", _at(-60))


def test_created_reads_the_api_servers_timestamp() -> None:
    body = {"metadata": {"creationTimestamp": "2026-12-06T04:00:00Z"}}
    assert created(body) == datetime(2026, 12, 6, 4, tzinfo=UTC)
    assert created({"metadata": {}}) is None


def test_a_run_in_a_namespace_being_deleted_makes_no_request_and_is_not_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(terminating, "TERMINATING", Terminating(Clock(REFUSED_AT)))
    monkeypatch.setattr(loop, "TERMINATING", terminating.TERMINATING)
    terminating.TERMINATING.refused("ml")

    def no_request(*_: Any, **__: Any) -> None:
        raise AssertionError("a request was made for an object that goes with its namespace")

    for name in ("apply", "create", "get", "patch_status", "delete", "delete_owned"):
        monkeypatch.setattr(kube, name, no_request)
    body = {
        "apiVersion": "scaleml.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": "a",
            "namespace": "ml",
            "uid": "uid-a",
            "generation": 1,
            "resourceVersion": "7",
            "creationTimestamp": "2026-12-06T03:59:00Z",
        },
        "spec": example("TrainingJob")["spec"],
    }
    assert loop.run(RECONCILER, "a", "ml", Context(OperatorConfig()), full=True, body=body) is False
