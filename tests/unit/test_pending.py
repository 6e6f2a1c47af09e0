"""Runs put off per object: a burst of events is one run, an earlier need moves it up, a failed run runs again."""

from __future__ import annotations

import asyncio

import pytest

from scaleml_operator.handlers import pending
from scaleml_operator.handlers.pending import Pending, backoff

KEY = ("TrainingJob", "team-a", "resnet")


class Recorder:
    def __init__(self, failing: int = 0) -> None:
        self.attempts: list[int] = []
        self.failing = failing

    async def __call__(self, failures: int) -> None:
        self.attempts.append(failures)
        if len(self.attempts) <= self.failing:
            raise ConnectionError("the API server is away")


def test_a_burst_of_events_for_one_object_is_one_run() -> None:
    work = Recorder()

    async def burst() -> None:
        runs = Pending()
        for _ in range(50):
            runs.later(KEY, work, delay=0.05)
        runs.later(("TrainingJob", "team-a", "other"), work, delay=0.05)
        assert len(runs) == 2
        await asyncio.sleep(0.2)
        assert len(runs) == 0

    asyncio.run(burst())
    assert work.attempts == [0, 0]


def test_a_run_needed_sooner_moves_the_pending_one_up_and_a_later_one_does_not_delay_it() -> None:
    ran_at: list[float] = []

    async def work(_failures: int) -> None:
        ran_at.append(asyncio.get_running_loop().time())

    async def schedule() -> float:
        runs = Pending()
        start = asyncio.get_running_loop().time()
        runs.later(KEY, work, delay=5)
        runs.later(KEY, work, delay=0.05)
        runs.later(KEY, work, delay=5)
        await asyncio.sleep(0.3)
        return start

    start = asyncio.run(schedule())
    assert len(ran_at) == 1
    assert ran_at[0] - start < 1


def test_a_failed_run_runs_again_after_a_backoff_until_it_gets_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pending, "RETRY_FIRST_SECONDS", 0.02)
    work = Recorder(failing=3)

    async def attempt() -> None:
        runs = Pending()
        await runs.now(KEY, work)
        # Failed at once: the next attempt is pending.
        assert work.attempts == [0]
        assert len(runs) == 1
        await asyncio.sleep(0.5)
        assert len(runs) == 0

    asyncio.run(attempt())
    # Each attempt is told how many failed before it; the fourth got through and nothing is left.
    assert work.attempts == [0, 1, 2, 3]


def test_a_run_now_takes_the_place_of_the_pending_one() -> None:
    work = Recorder()

    async def replace() -> None:
        runs = Pending()
        runs.later(KEY, work, delay=0.05)
        await runs.now(KEY, work)
        await asyncio.sleep(0.2)

    asyncio.run(replace())
    assert work.attempts == [0]


def test_the_backoff_doubles_up_to_a_minute() -> None:
    assert [backoff(failures) for failures in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(30) == pending.RETRY_MAX_SECONDS == 60
