from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from scaleml_operator.status.acceptance import (
    MAX_EVENT_MESSAGE_BYTES,
    Verdict,
    acceptance_events,
    accepted,
    event_message,
    rejected,
)
from scaleml_operator.status.conditions import Conditions, find_condition, set_condition

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_a_new_condition_is_added_with_the_current_time() -> None:
    conditions = set_condition([], type="Ready", status="False", reason="Waiting", message="m", generation=3, now=T0)
    assert conditions == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Waiting",
            "message": "m",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = set_condition([], type="Ready", status="False", reason="A", message="", generation=1, now=T0)
    same = set_condition(first, type="Ready", status="False", reason="B", message="new", generation=2, now=T1)
    assert same[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert (same[0]["reason"], same[0]["message"], same[0]["observedGeneration"]) == ("B", "new", 2)
    flipped = set_condition(same, type="Ready", status="True", reason="C", message="", generation=2, now=T1)
    assert flipped[0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"


def test_other_conditions_are_kept_in_order() -> None:
    conditions = set_condition([], type="A", status="True", reason="R", message="", generation=1, now=T0)
    conditions = set_condition(conditions, type="B", status="True", reason="R", message="", generation=1, now=T0)
    conditions = set_condition(conditions, type="A", status="False", reason="R", message="", generation=1, now=T1)
    assert [c["type"] for c in conditions] == ["A", "B"]
    assert find_condition(conditions, "B") == conditions[1]
    assert find_condition(conditions, "C") is None


def test_conditions_mark_one_generation_at_one_moment() -> None:
    conditions = Conditions([{"type": "Old", "status": "True"}], generation=7, now=T0)
    conditions.mark("Ready", False, "Waiting", "for the model")
    conditions.mark("Degraded", "Unknown", "NotChecked")
    assert conditions.mark("Ready", True, "ReplicasReady") is conditions.items
    ready, degraded = find_condition(conditions.items, "Ready"), find_condition(conditions.items, "Degraded")
    assert [c["type"] for c in conditions.items] == ["Old", "Ready", "Degraded"]
    assert ready == {
        "type": "Ready",
        "status": "True",
        "reason": "ReplicasReady",
        "message": "",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 7,
    }
    assert degraded is not None
    assert degraded["status"] == "Unknown"


class _Spec(BaseModel):
    pass


def _live_status() -> dict[str, Any]:
    """A status as the event handlers left it: Ready, with the phase they set."""
    conditions = Conditions([], generation=1, now=T0)
    conditions.mark("Accepted", True, "SpecAccepted")
    conditions.mark("Ready", True, "ReplicasReady")
    conditions.mark("Progressing", False, "RolloutComplete")
    return {"phase": "Ready", "observedGeneration": 1, "conditions": conditions.items}


def test_a_valid_verdict_decides_accepted_and_keeps_what_the_event_handlers_wrote() -> None:
    # The verdict was computed from kopf's (older) copy of the status, where Ready was still False.
    stale = {"phase": "Pending", "conditions": Conditions([], generation=1, now=T0).mark("Ready", False, "Creating")}
    verdict: Verdict[_Spec] = Verdict(_Spec(), accepted(stale, generation=2, initial_phase="Pending", now=T1))
    laid = verdict.over(_live_status())
    assert laid["phase"] == "Ready"
    assert laid["observedGeneration"] == 2
    assert {c["type"]: c["status"] for c in laid["conditions"]} == {
        "Accepted": "True",
        "Ready": "True",
        "Progressing": "False",
    }
    assert find_condition(laid["conditions"], "Accepted") == find_condition(verdict.fields["conditions"], "Accepted")


def test_an_invalid_verdict_decides_accepted_and_ready() -> None:
    verdict: Verdict[_Spec] = Verdict(
        None, rejected(_live_status(), generation=2, problem="spec.model: missing", now=T1)
    )
    laid = verdict.over(_live_status())
    assert laid["phase"] == "Ready"
    assert {c["type"]: (c["status"], c["reason"]) for c in laid["conditions"]} == {
        "Accepted": ("False", "InvalidSpec"),
        "Ready": ("False", "InvalidSpec"),
        "Progressing": ("False", "RolloutComplete"),
    }


def test_a_corrected_spec_takes_back_the_ready_that_the_invalid_one_set() -> None:
    # A TrainingJob has no Ready of its own: nothing else would ever clear this one.
    invalid = Verdict(None, rejected({}, generation=1, problem="spec.data: missing", now=T0)).over({})
    assert find_condition(invalid["conditions"], "Ready") is not None
    corrected = Verdict(_Spec(), accepted(invalid, generation=2, initial_phase="Pending", now=T1)).over(invalid)
    assert find_condition(corrected["conditions"], "Ready") is None
    accepted_condition = find_condition(corrected["conditions"], "Accepted")
    assert accepted_condition is not None
    assert (accepted_condition["status"], accepted_condition["observedGeneration"]) == ("True", 2)
    # A Ready for another reason (a kind's own) stays.
    live = Verdict(_Spec(), accepted({}, generation=2, initial_phase=None, now=T1)).over(_live_status())
    ready = find_condition(live["conditions"], "Ready")
    assert ready is not None
    assert ready["reason"] == "ReplicasReady"


def test_accepted_sets_generation_condition_and_first_phase_only_once() -> None:
    patch = accepted({}, generation=4, initial_phase="Pending", now=T0)
    assert patch["observedGeneration"] == 4
    assert patch["phase"] == "Pending"
    assert find_condition(patch["conditions"], "Accepted") is not None
    later = accepted({"phase": "Running", **patch}, generation=5, initial_phase="Pending", now=T1)
    assert "phase" not in later


def test_rejected_says_why_and_marks_the_object_not_ready() -> None:
    patch = rejected({}, generation=2, problem="spec.precision: bad", now=T0)
    accepted_condition = find_condition(patch["conditions"], "Accepted")
    ready = find_condition(patch["conditions"], "Ready")
    assert accepted_condition is not None
    assert ready is not None
    assert (accepted_condition["status"], accepted_condition["reason"]) == ("False", "InvalidSpec")
    assert accepted_condition["message"] == "spec.precision: bad"
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")


def _reasons(previous: dict[str, Any], status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(event.type, event.reason) for event in acceptance_events("TrainingJob", previous, status)]


def test_a_spec_valid_from_the_start_posts_no_event_and_every_later_verdict_posts_one() -> None:
    first = Verdict(_Spec(), accepted({}, generation=1, initial_phase="Pending", now=T0)).over({})
    assert _reasons({}, first) == []
    # The same verdict written again (a retried run) says nothing new either.
    assert _reasons(first, first) == []
    changed = Verdict(_Spec(), accepted(first, generation=2, initial_phase="Pending", now=T1)).over(first)
    assert _reasons(first, changed) == [("Normal", "SpecAccepted")]
    broken = Verdict(None, rejected(changed, generation=3, problem="spec.data: missing", now=T1)).over(changed)
    assert _reasons(changed, broken) == [("Warning", "InvalidSpec")]
    fixed = Verdict(_Spec(), accepted(broken, generation=4, initial_phase="Pending", now=T1)).over(broken)
    assert _reasons(broken, fixed) == [("Normal", "SpecAccepted")]


def test_a_spec_invalid_from_the_start_posts_its_warning() -> None:
    invalid = Verdict(None, rejected({}, generation=1, problem="spec.data: missing", now=T0)).over({})
    assert _reasons({}, invalid) == [("Warning", "InvalidSpec")]


def test_event_messages_are_cut_to_a_kibibyte_without_breaking_characters() -> None:
    assert event_message("short") == "short"
    long = "é" * 2000
    cut = event_message(long)
    assert len(cut.encode()) <= MAX_EVENT_MESSAGE_BYTES
    assert cut.endswith("...")
