"""A run reads the status this process wrote, not the older copy the watch's cache still holds."""

from __future__ import annotations

from typing import Any

from scaleml_operator.reconcile.own_writes import OwnWrites


def _cached(resource_version: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "resnet", "uid": "u1", "resourceVersion": resource_version, "generation": 1},
        "spec": {"epochs": 3},
        "status": {"phase": phase},
    }


def test_until_the_cache_shows_a_write_the_write_is_what_a_run_reads() -> None:
    writes = OwnWrites()
    writes.wrote("u1", replaced="10", resource_version="11", status={"phase": "Running"})
    read = writes.newest(_cached("10", "Pending"))
    assert read["metadata"]["resourceVersion"] == "11"
    assert read["status"] == {"phase": "Running"}
    assert read["spec"] == {"epochs": 3}


def test_writes_in_a_row_are_read_as_the_last_while_the_cache_holds_any_they_replaced() -> None:
    writes = OwnWrites()
    writes.wrote("u1", replaced="10", resource_version="11", status={"phase": "Running"})
    writes.wrote("u1", replaced="11", resource_version="12", status={"phase": "Succeeded"})
    for behind in ("10", "11"):
        assert writes.newest(_cached(behind, "Pending"))["status"] == {"phase": "Succeeded"}


def test_once_the_cache_shows_the_write_or_anything_newer_the_cache_is_read_and_the_entry_goes() -> None:
    writes = OwnWrites()
    writes.wrote("u1", replaced="10", resource_version="11", status={"phase": "Running"})
    # Someone else wrote after this process did: the cache has that, and it wins.
    assert writes.newest(_cached("13", "Failed"))["status"] == {"phase": "Failed"}
    assert len(writes) == 0
    assert writes.newest(_cached("10", "Pending"))["status"] == {"phase": "Pending"}


def test_a_deleted_objects_write_is_forgotten() -> None:
    writes = OwnWrites()
    writes.wrote("u1", replaced="10", resource_version="11", status={"phase": "Running"})
    writes.forget("u1")
    assert len(writes) == 0
