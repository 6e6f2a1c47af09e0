"""Reading whatever the API server sends, however deeply it is nested.

kopf decodes each list and each watch event with `json.loads` (kopf/_cogs/clients/api.py: the
watch stream's lines, and aiohttp's `response.json()` for the lists), and json's scanner recurses
once per level of nesting: it raises RecursionError near Python's recursion limit, about 1,000
levels into a TrainingJob under CPython 3.11's default. The API server stores objects up to 10,000
levels deep wherever a schema leaves a value free-form. One such object ended the watch of its
kind, and the operator with it, on every restart, during the first listing: one tenant stopped
everyone's.

Raising the recursion limit is no cure everywhere: it governs json's C scanner only up to
CPython 3.11 (3.12's scanner stops near 1,500 levels whatever the limit, 3.13's near 10,000, short
of a list of such objects), and it lets a runaway recursion elsewhere overflow the thread's C stack
instead of raising. Instead, `install()` gives json.loads, called without options as kopf and
aiohttp call it, a decoder that first tries json's own and, only when that raises RecursionError,
parses the document without recursing, keeping its first `MAX_DEPTH` levels and putting `TOO_DEEP`
where a deeper map or list was. A TrainingJob read so no longer matches its schema (a map in
model.params, which holds none now), so it is reported like any invalid spec, `Accepted=False`
and an Event naming the field; whatever the object, the watch and every other object go on.
Nothing a Kubernetes object legitimately holds comes near either depth, and whatever json decodes
today is decoded as before.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from json.decoder import WHITESPACE, JSONDecodeError, scanstring  # type: ignore[attr-defined]
from json.scanner import NUMBER_RE
from typing import Any, Final

log = logging.getLogger(__name__)

# Well within what json and whatever reads an object afterwards (pydantic, copies, logging) manage
# recursively, and well beyond the depth of anything legitimate, a CRD's own schema included.
MAX_DEPTH: Final = 100
TOO_DEEP: Final = f"<nested more than {MAX_DEPTH} levels deep: not read>"
# The names json's own decoder accepts besides numbers and strings.
_CONSTANTS: Final[dict[str, Any]] = {
    "null": None,
    "true": True,
    "false": False,
    "NaN": math.nan,
    "Infinity": math.inf,
    "-Infinity": -math.inf,
}
_CLOSING: Final = {"{": "}", "[": "]"}


@dataclass
class _Level:
    """A map or list being read: its opening bracket, what is kept of it (None below MAX_DEPTH), and
    for a map the key whose value comes next."""

    opening: str
    kept: dict[str, Any] | list[Any] | None
    key: str = ""

    def add(self, value: Any) -> None:
        if isinstance(self.kept, dict):
            self.kept[self.key] = value
        elif self.kept is not None:
            self.kept.append(value)


def _skip(text: str, at: int) -> int:
    return WHITESPACE.match(text, at).end()  # type: ignore[no-any-return]


def _key(text: str, at: int, level: _Level) -> int:
    """Reads a map's `"key":` at `at` into `level`; returns where its value starts."""
    if text[at : at + 1] != '"':
        raise JSONDecodeError("Expecting property name enclosed in double quotes", text, at)
    level.key, at = scanstring(text, at + 1)
    at = _skip(text, at)
    if text[at : at + 1] != ":":
        raise JSONDecodeError("Expecting ':' delimiter", text, at)
    return _skip(text, at + 1)


def _scalar(text: str, at: int) -> tuple[Any, int]:
    if text[at : at + 1] == '"':
        return scanstring(text, at + 1)  # type: ignore[no-any-return]
    for name, value in _CONSTANTS.items():
        if text.startswith(name, at):
            return value, at + len(name)
    number = NUMBER_RE.match(text, at)
    if number is None:
        raise JSONDecodeError("Expecting value", text, at)
    integer, fraction, exponent = number.groups()
    if fraction or exponent:
        return float(integer + (fraction or "") + (exponent or "")), number.end()
    return int(integer), number.end()


def decode_shallow(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON document `text` with every map or list below `max_depth` levels replaced by TOO_DEEP.

    Iterative, so that no depth of input makes it recurse. Raises JSONDecodeError as json does.
    """
    levels: list[_Level] = []
    root: Any = None
    at = _skip(text, 0)
    while True:
        # A value starts at `at`.
        opening = text[at : at + 1]
        if opening in _CLOSING:
            parent_kept = not levels or levels[-1].kept is not None
            kept: dict[str, Any] | list[Any] | None = None
            if parent_kept and len(levels) < max_depth:
                kept = {} if opening == "{" else []
            if not levels:
                root = kept
            elif parent_kept:
                levels[-1].add(TOO_DEEP if kept is None else kept)
            levels.append(_Level(opening, kept))
            at = _skip(text, at + 1)
            if text[at : at + 1] != _CLOSING[opening]:
                if opening == "{":
                    at = _key(text, at, levels[-1])
                continue
            levels.pop()
            at += 1
        else:
            value, at = _scalar(text, at)
            if levels:
                levels[-1].add(value)
            else:
                root = value
        # A value ended: close what it ends, or go on to the next value of its map or list.
        at = _skip(text, at)
        while levels and text[at : at + 1] == _CLOSING[levels[-1].opening]:
            levels.pop()
            at = _skip(text, at + 1)
        if not levels:
            if at != len(text):
                raise JSONDecodeError("Extra data", text, at)
            return root
        if text[at : at + 1] != ",":
            raise JSONDecodeError("Expecting ',' delimiter", text, at)
        at = _skip(text, at + 1)
        if levels[-1].opening == "{":
            at = _key(text, at, levels[-1])


class TotalDecoder(json.JSONDecoder):
    """json's decoder, with `decode_shallow` for what is nested too deep for it."""

    def decode(self, s: str, _w: Callable[..., Any] = WHITESPACE.match) -> Any:
        try:
            return super().decode(s, _w)
        except RecursionError:
            log.warning(
                "A document of %d characters from the API server is nested too deep for json to decode: read "
                "without what lies more than %d levels deep",
                len(s),
                MAX_DEPTH,
            )
            return decode_shallow(s)


def install() -> None:
    """Makes `json.loads` without options (kopf's and aiohttp's calls) decode with TotalDecoder.

    json.loads hands such calls to the module's `_default_decoder`: the one place where both of
    kopf's ways of reading the API server can be reached without changing kopf.
    """
    json._default_decoder = TotalDecoder()  # type: ignore[attr-defined]
