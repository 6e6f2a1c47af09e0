"""YAML read as kubectl reads it, so that local mode judges the values the API server would get.

kubectl turns YAML into JSON with sigs.k8s.io/yaml, whose parser (go-yaml v2) resolves unquoted
scalars by YAML 1.1 rules of its own, not PyYAML's: `y`, `n`, `on` and `off` are booleans, `1e3`
and `0o17` numbers, a date or `1:30` a string; and map keys that are numbers or booleans become
strings. What the JSON then means to the API server (nulls, whole numbers) is
`scaleml_api.validation.admitted`'s business.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Hashable
from typing import Any, Final

import yaml

_INT64: Final = range(-(2**63), 2**63)
_UINT64: Final = range(2**64)

# go-yaml v2's resolve table: the plain scalars it looks up by name.
_WORDS: Final[dict[str, Any]] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
# Go's strconv.ParseInt(s, 0, 64) syntax: a sign, then hexadecimal, binary, octal (0o or a leading 0), decimal.
_INTEGER: Final = re.compile(r"([-+]?)(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)")
_BASES: Final = {"x": 16, "b": 2, "o": 8}
# go-yaml v2's yamlStyleFloat, for what starts with a digit or a sign (with underscores dropped).
_FLOAT: Final = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# What Go's strconv.ParseFloat takes of what starts with ".": underscores only between digits.
_DOT_FLOAT: Final = re.compile(r"\.[0-9](_?[0-9])*([eE][-+]?[0-9](_?[0-9])*)?")
_PLAIN_TAG: Final = "tag:scaleml.dev,2025:plain"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


def _integer(text: str) -> int | None:
    match = _INTEGER.fullmatch(text)
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[1:2].lower() in _BASES:
        value = int(digits[2:], _BASES[digits[1].lower()])
    else:
        value = int(digits, 8 if digits.startswith("0") and len(digits) > 1 else 10)
    value = -value if sign == "-" else value
    # Beyond int64, go-yaml tries an unsigned one (no sign allowed), then a float.
    return value if value in _INT64 or (not sign and value in _UINT64) else None


def scalar(text: str) -> Any:
    """An unquoted, untagged YAML scalar as go-yaml v2 resolves it."""
    if text in _WORDS:
        return _WORDS[text]
    if _DOT_FLOAT.fullmatch(text):
        return float(text)
    if text[:1] not in tuple("+-0123456789"):
        return text
    # Underscores are dropped first; a timestamp matches neither form and stays a string.
    plain = text.replace("_", "")
    if (integer := _integer(plain)) is not None:
        return integer
    if _FLOAT.fullmatch(plain) and not math.isinf(number := float(plain)):
        return number
    return text


class ConversionError(ValueError):
    """The YAML has no JSON form; kubectl refuses it too."""


def _float32_key(value: float) -> str:
    # Go's strconv.FormatFloat(key, 'g', -1, 32), as sigs.k8s.io/yaml writes a float map key: the
    # shortest digits that give back the same float32, with an exponent below 1e-4 and from 1e6 on.
    if math.isnan(value):
        return ".nan"
    try:
        single: float = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        single = math.copysign(math.inf, value)
    if math.isinf(single):
        return ".inf" if single > 0 else "-.inf"
    digits = next(
        d for d in range(1, 10) if struct.unpack("f", struct.pack("f", float(f"{single:.{d - 1}e}")))[0] == single
    )
    exponent = int(f"{single:.{digits - 1}e}".split("e")[1])
    if exponent < -4 or exponent >= 6:
        return f"{single:.{digits - 1}e}"
    return f"{single:.{max(digits - 1 - exponent, 0)}f}"


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int) and key in _INT64:
        return str(key)
    if isinstance(key, float):
        return _float32_key(key)
    raise ConversionError(f"unsupported map key {key!r}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with plain scalars resolved by `scalar`, keys made strings, timestamps left as text."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        # Keys become strings as they are read: as Python keys, 1 and true would be one key.
        self.flatten_mapping(node)
        return {_key(self.construct_object(key, deep)): self.construct_object(value, deep) for key, value in node.value}


# Every plain scalar gets one tag, whose constructor is `scalar`; "<<" stays a merge key, as in go-yaml.
_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver(_MERGE_TAG, re.compile(r"^<<$"), ["<"])
_Loader.add_implicit_resolver(_PLAIN_TAG, re.compile(r".*", re.DOTALL), None)
_Loader.add_constructor(_PLAIN_TAG, lambda _, node: scalar(node.value))
_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda _, node: node.value)


def _untagged(loader: _Loader, _: str, node: yaml.Node) -> Any:
    """A value under a tag go-yaml does not know (`!generated 12`): a scalar is its text ("12"), as go-yaml
    resolves no tag it does not know; a list or map is read as if untagged."""
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return str(node.value)


# Local tags only: "tag:yaml.org,2002:" ones PyYAML does not construct (!!set, !!omap, ...) stay refused.
_Loader.add_multi_constructor("!", _untagged)


# go-yaml refuses a document whose aliases expand it past a bound ("excessive aliasing"): a few
# hundred bytes of nested aliases would otherwise expand to gigabytes. Far more values than any
# manifest holds.
MAX_VALUES: Final = 1_000_000


def _jsonable(value: Any, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConversionError(f"document contains excessive aliasing: more than {MAX_VALUES} values once expanded")
    if isinstance(value, dict):
        return {key: _jsonable(item, budget) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item, budget) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConversionError(f"unsupported value: {value}")
    if isinstance(value, bytes):  # !!binary: Go keeps the bytes as a string
        return value.decode(errors="replace")
    if value is None or isinstance(value, str | int | float):
        return value
    raise ConversionError(f"unsupported value: {value!r}")


def load_all(text: str) -> list[Any]:
    """The non-empty documents of `text` as kubectl sends them, in JSON's types.

    Raises yaml.YAMLError for YAML that does not parse, ConversionError for YAML without a JSON form.
    """
    return [
        _jsonable(document, [MAX_VALUES]) for document in yaml.load_all(text, Loader=_Loader) if document is not None
    ]
