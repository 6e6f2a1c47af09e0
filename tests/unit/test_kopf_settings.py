"""kopf's diff-base is switched off (handlers.settings.NoDiffBase): right only while no handler reads it."""

from __future__ import annotations

import kopf

import scaleml_operator.handlers  # noqa: F401  (registers the handlers)


def test_no_handler_uses_kopfs_diff_base() -> None:
    # Create, update, resume and field handlers are told what changed from the diff-base; timers and
    # daemons are reset by it. An operator that registers any of them needs kopf's storage back.
    registry = kopf.get_default_registry()
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._spawning.get_all_handlers()) == []
    assert list(registry._watching.get_all_handlers()), "the event handlers are registered"
