"""The conditions-and-Events vocabulary: declared once, well-formed, and the only source of reasons in the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from scaleml_api.conditions import Term, Vocabulary
from scaleml_api.v1alpha1 import VOCABULARIES

ROOT = Path(__file__).resolve().parents[2]
# Where conditions and Events are made: the operator and the monitor pod.
SOURCES = [*(ROOT / "operator" / "scaleml_operator").rglob("*.py"), *(ROOT / "workloads").rglob("monitor/*.py")]
# Calls whose arguments at these positions are a condition type or a reason.
REASON_ARGUMENTS = {"mark": (0, 2), "Event": (1,), "Waiting": (0,), "Decision": (1,), "Retraining": (1,), "event": (1,)}
CAMEL_CASE = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _terms(vocabulary: Vocabulary) -> list[Term]:
    return [*vocabulary.conditions, *vocabulary.reasons, *vocabulary.events]


@pytest.mark.parametrize("vocabulary", VOCABULARIES, ids=lambda v: v.kind or "shared")
def test_every_term_is_camel_case_explained_and_declared_once(vocabulary: Vocabulary) -> None:
    for term in _terms(vocabulary):
        assert CAMEL_CASE.match(term.name), term.name
        assert term.meaning.strip().endswith((".", ")")), term.name
    for group in (vocabulary.conditions, vocabulary.reasons, vocabulary.events):
        names = [term.name for term in group]
        assert len(names) == len(set(names)), names


def test_reasons_name_condition_types_that_exist() -> None:
    types = {term.name for vocabulary in VOCABULARIES for term in vocabulary.conditions}
    for vocabulary in VOCABULARIES:
        for reason in vocabulary.reasons:
            assert reason.conditions, reason.name
            assert set(reason.conditions) <= types, (reason.name, reason.conditions)
        assert all(event.event_type in ("Normal", "Warning") for event in vocabulary.events)


def _literal_reasons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name == "event" and "on.event" in ast.unparse(node.func):
            continue  # kopf.on.event(group, version, plural): a registration, not an Event
        for position in REASON_ARGUMENTS.get(name, ()):
            if position < len(node.args):
                argument = node.args[position]
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {argument.value!r}")
    return found


def test_the_code_writes_no_condition_type_or_reason_as_a_bare_string() -> None:
    assert SOURCES
    literals = [finding for path in SOURCES for finding in _literal_reasons(path)]
    assert literals == []
