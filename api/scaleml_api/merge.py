"""JSON merge patch (RFC 7386): how overrides are laid over a spec, e.g. a DriftMonitor's trainingJobOverrides."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def merge_patch(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in, recursively; a None value removes the key. Neither input changes."""
    result = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
