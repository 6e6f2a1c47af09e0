"""What the API says of each kind besides its models: names, and how kubectl shows it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel

from scaleml_api.base import GROUP, VERSION

CATEGORY = "scaleml"

# An object's name names its Services too, which must be DNS-1035 labels: a letter first, no dots.
NAME_PATTERN: Final = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MESSAGE: Final = (
    "must consist of lower case letters, digits and '-', start with a letter and end with a letter or digit "
    "(it names the object's Services)"
)

SpecT = TypeVar("SpecT", bound=BaseModel)
StatusT = TypeVar("StatusT", bound=BaseModel)


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class Kind(Generic[SpecT, StatusT]):
    """One kind of the API; parsing an object's spec with it gives that kind's own spec type."""

    kind: str
    plural: str
    short_name: str
    description: str
    spec: type[SpecT]
    status: type[StatusT]
    columns: tuple[PrinterColumn, ...]
    # Longest metadata.name: child object names derive from it (pods add "-N-xxxxx").
    max_name_length: int = 63
    scale: bool = False

    def name_error(self, name: str) -> str | None:
        """What is wrong with `name` as this kind's metadata.name, as the API server says it; None if nothing."""
        if len(name) > self.max_name_length:
            return f"may be at most {self.max_name_length} characters long"
        return None if re.fullmatch(NAME_PATTERN, name) else NAME_MESSAGE

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def group_version(self) -> tuple[str, str, str]:
        """(group, version, plural), the way kopf and the dynamic client address the kind."""
        return GROUP, VERSION, self.plural


PHASE_COLUMN = PrinterColumn("Phase", ".status.phase", description="Lifecycle phase.")
AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")

# A kind of any spec and status: for code that treats the kinds alike (CRDs, docs, listings).
AnyKind = Kind[Any, Any]
