"""The base of every ScaleML model: camelCase on the wire, unknown fields rejected, cross-field rules.

A cross-field rule is declared once, as a `Rule`: its CEL expression goes into the CRD (so the API
server rejects a violating object) and its Python check runs when the operator validates a spec
(so objects that predate a rule, or reach us some other way, are caught too). A test checks that
both sides reject the same manifests.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
    create_model,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

GROUP = "scaleml.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Rule:
    """A validation rule that spans fields, enforced by the API server (CEL) and by the operator."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    # Relative JSONPath of the field to blame, so the API server's error names it.
    field_path: str = ""

    @property
    def location(self) -> Location:
        return tuple(part for part in self.field_path.split(".") if part)

    def as_schema(self) -> dict[str, str]:
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


Location = tuple[int | str, ...]


class NestedFieldError(ValueError):
    """Problems with fields below the model being validated, each with its relative location.

    pydantic would report a model-level error at the model itself; this keeps the field's name, so
    the operator's message names the same field the API server's does.
    """

    def __init__(self, problems: list[tuple[Location, str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class ListType:
    """A list field's x-kubernetes-list-type, declared once: it goes into the CRD, and the models check it.

    Without keys, a set: no two items alike. With keys (camelCase), a map: no two items alike in
    those fields. Either way the API server refuses a duplicate naming its index
    (`spec.env[1]: Duplicate value: {"name":"A"}`), and so does the model.
    """

    keys: tuple[str, ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._unique, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-list-type"] = "map" if self.keys else "set"
        if self.keys:
            json_schema["x-kubernetes-list-map-keys"] = list(self.keys)
        return json_schema

    def _identity(self, item: Any) -> str:
        value = {key: getattr(item, to_snake(key)) for key in self.keys} if self.keys else item
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def _unique(self, items: Sequence[Any]) -> Sequence[Any]:
        seen: set[str] = set()
        problems: list[tuple[Location, str]] = []
        for index, item in enumerate(items):
            identity = self._identity(item)
            if identity in seen:
                problems.append(((index,), f"Duplicate value: {identity}"))
            seen.add(identity)
        if problems:
            raise NestedFieldError(problems)
        return items


def not_above(low: str, high: str) -> Rule:
    """The rule that field `low` (camelCase) is at most field `high`, blaming `low`."""
    low_attr, high_attr = to_snake(low), to_snake(high)
    return Rule(
        cel=f"self.{low} <= self.{high}",
        message=f"{low} must not exceed {high}",
        check=lambda model: getattr(model, low_attr) <= getattr(model, high_attr),
        field_path=f".{low}",
    )


def _add_rules(schema: dict[str, Any], model: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(model, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.as_schema() for rule in rules]


class ApiModel(BaseModel):
    """A part of a ScaleML resource, as users write it in YAML."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        json_schema_extra=_add_rules,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        problems = [(rule.location, rule.message) for rule in self.rules if not rule.check(self)]
        if problems:
            raise NestedFieldError(problems)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in the API: camelCase keys, unset optional sections left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


_QUANTITY = re.compile(
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


_SUFFIXES: Final = {
    **{suffix: Decimal(1024) ** power for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), start=1)},
    **{suffix: Decimal(10) ** power for suffix, power in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6))},
    **{suffix: Decimal(10) ** power for suffix, power in (("G", 9), ("T", 12), ("P", 15), ("E", 18))},
}


def _exact_quantity(quantity: str) -> Decimal:
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if quantity.endswith(suffix):
            return Decimal(quantity[: -len(suffix)]) * _SUFFIXES[suffix]
    return Decimal(quantity)


def quantity_value(quantity: str) -> float:
    """A resource quantity as a number of its unit: "500m" is 0.5 (cores), "2Gi" 2147483648.0 (bytes), "1e3" 1000."""
    return float(_exact_quantity(quantity))


_BINARY_SUFFIXES: Final = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_SUFFIXES: Final = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}


# Every render of every object asks again for the same few amounts; bounded, as specs are anyone's text.
@functools.lru_cache(maxsize=4096)
def canonical_quantity(quantity: str, *, scale: int = -9) -> str:
    """The quantity as the API server writes it back: "8192Mi" is "8Gi", "0.5" "500m", "1000m" "1".

    What the operator renders (a pod's resources, a run config, a command line) is then a function
    of the amount, not of how it was written: rewriting `memory: 8Gi` as `8192Mi` rolls no pod and
    is no change to a running Job. The format is kept, as Kubernetes keeps it (a binary suffix stays
    binary, unless the amount is a fraction or below 1024), so what the operator applies is what the
    API server stores; tests/apiserver/test_quantities.py holds it to the API server's own answers.
    """
    value = _exact_quantity(quantity.lstrip("+"))
    # Kubernetes keeps nanounits at most, rounding up; and milliunits in the amounts of a pod or a
    # quota (a ResourceList: `scale` -3).
    unit = Decimal(10) ** scale
    value = (value / unit).to_integral_value(rounding="ROUND_CEILING") * unit
    binary = quantity.endswith(_BINARY_SUFFIXES[1:])
    if binary and abs(value) >= 1024 and value == value.to_integral_value():
        amount, power = int(value), 0
        while amount % 1024 == 0 and power < len(_BINARY_SUFFIXES) - 1:
            amount, power = amount // 1024, power + 1
        return f"{amount}{_BINARY_SUFFIXES[power]}"
    if value == 0:
        return "0"
    exponent = max(e for e in _DECIMAL_SUFFIXES if value % Decimal(10) ** e == 0)
    mantissa = int(value / Decimal(10) ** exponent)
    if re.search(r"[eE][-+]?[0-9.]", quantity):
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{_DECIMAL_SUFFIXES[exponent]}"


# The API server holds a quantity in an int64, and its quantity() clamps one of 2^63 - 1 or more to
# 2^63 - 1, which is then not below 8Ei: the bound is exact, so that no value near it passes here
# and fails there (or the other way round).
_QUANTITY_LIMIT: Final = 2**63 - 1
_QUANTITY_MAX_LENGTH: Final = 64


def _quantity(*, positive: bool) -> tuple[Any, ...]:
    """A quantity type's parts: its text, checked as Kubernetes' own types check it, and its bounds.

    The schema is the one Kubernetes' types generate; the bounds are checked with its CEL quantity
    library at admission, and here with the same numbers.
    """
    lowest = "above 0" if positive else "of at least 0"
    message = f"must be a quantity {lowest} and below 2^63"

    def whole_or_text(value: object, handler: ValidatorFunctionWrapHandler) -> str:
        # An integer is taken as the CRD's int-or-string takes it, whose rule asks only for its lower
        # bound; anything else must be a quantity string. A fraction as a number (cpu: 0.5) is refused,
        # as the API server refuses a number that is not whole for an int-or-string field.
        if isinstance(value, int) and not isinstance(value, bool):
            if not (value > 0 if positive else value >= 0):
                raise ValueError(message)
            return str(value)
        quantity: str = handler(value)
        return quantity

    def bounded(quantity: str) -> str:
        try:
            value = _exact_quantity(quantity)
        # What the pattern lets through and Kubernetes' parser refuses: a fractional exponent (1e1.5).
        except ArithmeticError:
            raise ValueError(message) from None
        if not (value > 0 if positive else value >= 0) or value >= _QUANTITY_LIMIT:
            raise ValueError(message)
        return quantity

    if positive:
        whole, low = "self > 0", "quantity(self).isGreaterThan(quantity('0'))"
    else:
        whole, low = "self >= 0", "!quantity(self).isLessThan(quantity('0'))"
    schema = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": _QUANTITY.pattern,
        # Bounds the cost of the rule, which the API server estimates from the longest string.
        "maxLength": _QUANTITY_MAX_LENGTH,
        "x-kubernetes-int-or-string": True,
        # 8Ei is 2^63.
        "x-kubernetes-validations": [
            {
                "rule": f"type(self) == int ? {whole} : isQuantity(self) && "
                f"{low} && quantity(self).isLessThan(quantity('8Ei'))",
                "message": message,
            }
        ],
    }
    return (
        StringConstraints(pattern=_QUANTITY.pattern, max_length=_QUANTITY_MAX_LENGTH),
        AfterValidator(bounded),
        WrapValidator(whole_or_text),
        WithJsonSchema(schema),
        # Run configs and the objects the operator writes carry the amount, not its spelling; the
        # model keeps the text as written, which the rules (as CEL's) judge.
        PlainSerializer(canonical_quantity, when_used="json"),
    )


# A resource quantity ("500m", "4", 16Gi), written as a string or a whole number; the schema is the
# one Kubernetes' own types generate.
Quantity = Annotated[str, *_quantity(positive=False)]
# A quantity above 0, such as the target of an autoscaling metric (the HPA refuses 0 and below).
PositiveQuantity = Annotated[str, *_quantity(positive=True)]

# A Go-style duration of whole hours, minutes and seconds: "30s", "5m", "1h30m", "24h". Each unit
# at most once, in that order, of at most 6 digits: CEL's duration() (a Go time.Duration) overflows
# past 2562047h, and this bounds every Duration below 1016944h (999999h999999m999999s), where
# repeated units ("999999h999999h999999h") would not be.
_HOURS, _MINUTES, _SECONDS = (f"[0-9]{{1,6}}{unit}" for unit in "hms")
DURATION_PATTERN: Final = f"^({_HOURS}({_MINUTES})?({_SECONDS})?|{_MINUTES}({_SECONDS})?|{_SECONDS})$"
DURATION_FORMAT: Final = (
    "a duration of whole hours, minutes and seconds (e.g. 90s, 1h30m), each unit at most once and in that "
    "order, each of at most 6 digits"
)


def _duration(duration: str) -> str:
    if re.fullmatch(DURATION_PATTERN, duration) is None:
        raise ValueError(f"must be {DURATION_FORMAT}")
    return duration


_MOST_HOURS: Final = 999_999


def canonical_duration(duration: str) -> str:
    """The duration in its shortest spelling: "300s" is "5m", "90m" "1h30m", "0h" "0s".

    A run config then changes (and its pod restarts) when the span does, not its spelling. A span
    past the pattern's 999999 hours keeps its own spelling, which the pattern accepted.
    """
    seconds = duration_seconds(duration)
    hours, minutes, rest = seconds // 3600, seconds % 3600 // 60, seconds % 60
    if hours > _MOST_HOURS:
        return duration
    return "".join(f"{amount}{unit}" for amount, unit in ((hours, "h"), (minutes, "m"), (rest, "s")) if amount) or "0s"


# The pattern goes into the CRD; the models check it with the message above, rather than pydantic's
# own, which would only print the pattern.
Duration = Annotated[
    str,
    StringConstraints(max_length=21),
    AfterValidator(_duration),
    Field(json_schema_extra={"pattern": DURATION_PATTERN}),
    PlainSerializer(canonical_duration, when_used="json"),
]


def _int_or_string(value: object, handler: ValidatorFunctionWrapHandler) -> int | str:
    # One message at the field, rather than one per member of the union.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be an integer or a string")
    result: int | str = handler(value)
    return result


# A field that takes a whole number or a string, as the CRD's x-kubernetes-int-or-string does.
IntOrString = Annotated[
    int | str,
    WrapValidator(_int_or_string),
    Field(json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}),
]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# The name of an object in the same namespace (a PersistentVolumeClaim, a TrainingJob, ...). Every
# alternative of a pattern is anchored at both ends: a name goes into API request paths, and an
# unanchored branch would let "x/../../other-namespace/..." through (patterns match anywhere).
ObjectName = Annotated[str, StringConstraints(pattern=_DNS_SUBDOMAIN, max_length=253)]
OptionalObjectName = Annotated[str, StringConstraints(pattern=f"^$|{_DNS_SUBDOMAIN}", max_length=253)]
DnsLabel = Annotated[str, StringConstraints(pattern=_DNS_LABEL, max_length=63)]
OptionalDnsLabel = Annotated[str, StringConstraints(pattern=f"^$|{_DNS_LABEL}", max_length=63)]
# The patterns of the name types, for the checks that every name field refuses what is not a name.
NAME_PATTERNS: Final = frozenset({_DNS_SUBDOMAIN, f"^$|{_DNS_SUBDOMAIN}", _DNS_LABEL, f"^$|{_DNS_LABEL}"})

# A container image reference (registry/repository:tag@digest), or empty for the operator's default:
# no white space, nothing that starts like a command-line option.
OptionalImage = Annotated[str, StringConstraints(pattern=r"^$|^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$", max_length=512)]

# A column or feature name in a data set.
ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _inside_volume(path: str) -> str:
    if ".." in path.split("/"):
        raise ValueError("a path inside a volume must not contain '..'")
    return path


_VOLUME_PATH = r"^/?([^/]+/)*[^/]+$"
# Refused at admission as well as here: ".." may not climb out of the volume.
_NO_PARENT_STEP = {
    "x-kubernetes-validations": [{"rule": "!self.split('/').exists(s, s == '..')", "message": "must not contain '..'"}]
}

# A path inside a mounted volume; "/" is the volume's root, ".." may not climb out of it.
VolumePath = Annotated[
    str,
    StringConstraints(pattern=_VOLUME_PATH, max_length=1024),
    AfterValidator(_inside_volume),
    Field(json_schema_extra=_NO_PARENT_STEP),
]
# The same, or empty where the path is optional.
OptionalVolumePath = Annotated[
    str,
    StringConstraints(pattern=f"^$|{_VOLUME_PATH}", max_length=1024),
    AfterValidator(_inside_volume),
    Field(json_schema_extra=_NO_PARENT_STEP),
]


def optional_fields(model: type[ApiModel], name: str, doc: str, only: tuple[str, ...] = ()) -> type[ApiModel]:
    """A model with `model`'s fields (or `only` those), each optional with no default, same bounds and text.

    For partial updates: the API server fills in no default, so what is set is exactly what the user
    wrote. A section is made partial too, for the same reason: a default inside it would overwrite
    the value it is laid over. Cross-field rules are not carried over; whatever the partial model
    is laid over is validated whole afterwards.
    """
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if only and field_name not in only:
            continue
        annotation: Any = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, ApiModel):
            annotation = optional_fields(annotation, f"{name}{annotation.__name__}", annotation.__doc__ or "")
        if info.metadata:
            annotation = Annotated[annotation, *info.metadata]
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else None
        fields[field_name] = (
            annotation | None,
            Field(default=None, description=info.description, json_schema_extra=extra),
        )
    return create_model(name, __base__=ApiModel, __doc__=doc, **fields)


def duration_seconds(duration: str) -> int:
    """The number of seconds a Duration stands for."""
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(amount) * units[unit] for amount, unit in re.findall(r"([0-9]+)([smh])", duration))
