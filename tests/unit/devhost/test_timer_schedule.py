"""NCRONTAB next occurrences and the timer's firing rules (fake clock, no threads)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from devhost.config import DevHostError
from devhost.timer_trigger import Schedule, TimerRunner


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def occurrences(expression: str, start: datetime, count: int = 3) -> list[datetime]:
    schedule, found = Schedule(expression), []
    for _ in range(count):
        start = schedule.next_after(start)
        found.append(start)
    return found


def test_six_fields_start_with_seconds():
    assert occurrences("*/15 * * * * *", utc(2024, 1, 1, 0, 0, 7)) == [
        utc(2024, 1, 1, 0, 0, 15), utc(2024, 1, 1, 0, 0, 30), utc(2024, 1, 1, 0, 0, 45)]
    assert occurrences("0 */5 * * * *", utc(2024, 1, 1, 0, 4, 59), 2) == [
        utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 10)]
    assert occurrences("0 30 9 * * 1-5", utc(2024, 1, 5, 10), 2) == [  # Fri 10:00 -> Mon, Tue 09:30
        utc(2024, 1, 8, 9, 30), utc(2024, 1, 9, 9, 30)]


def test_every_second_and_sub_second_start():
    assert occurrences("* * * * * *", utc(2024, 1, 1, 0, 0, 0) + timedelta(milliseconds=500), 2) == [
        utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0, 0, 2)]


def test_next_occurrence_is_strictly_after_the_given_time():
    assert Schedule("0 0 * * * *").next_after(utc(2024, 1, 1, 5)) == utc(2024, 1, 1, 6)


def test_five_fields_are_minutes_like_the_host_accepts():
    assert occurrences("*/10 * * * *", utc(2024, 1, 1, 0, 1), 2) == [utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 0, 20)]


def test_day_of_month_and_day_of_week_must_both_match():
    # NCRONTAB: the 13th *and* a Friday (Vixie cron would fire on every 13th and every Friday).
    assert occurrences("0 0 0 13 * Fri", utc(2024, 1, 1), 2) == [utc(2024, 9, 13), utc(2024, 12, 13)]


def test_names_and_ranges():
    assert occurrences("0 0 12 * Jan Mon", utc(2024, 1, 1, 13), 2) == [utc(2024, 1, 8, 12), utc(2024, 1, 15, 12)]


def test_timespan_schedules_are_fixed_intervals():
    schedule = Schedule("00:00:05")
    assert schedule.next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 0, 5)
    assert "every 0:00:05" in schedule.describe()


@pytest.mark.parametrize("expression", [
    "", "bogus", "* * * * * * 2024", "0 0 0 L * *", "0 0 0 15W * *", "0 0 0 ? * MON", "0 0 0 * * 5#3",
    "61 * * * * *", "00:00:00",
])
def test_invalid_schedules_are_refused(expression):
    with pytest.raises(DevHostError):
        Schedule(expression)


class FakeClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def runner_with(schedule: str, clock: FakeClock):
    calls = []
    function = SimpleNamespace(spec=SimpleNamespace(name="tick"), invoke=calls.append)
    return TimerRunner(function, Schedule(schedule), clock=clock), calls


def test_firing_passes_a_timer_request_and_schedules_from_the_fire_time():
    clock = FakeClock(utc(2024, 1, 1, 0, 0, 0, 200_000))
    runner, calls = runner_with("*/10 * * * * *", clock)
    assert runner.next == utc(2024, 1, 1, 0, 0, 10)
    clock.now = utc(2024, 1, 1, 0, 0, 9, 999_000)  # fired a moment early: still that occurrence
    runner._fire(clock(), scheduled=True)
    assert calls[0].past_due is False and calls[0].schedule_status["Next"] == "2024-01-01T00:00:10+00:00"
    assert (runner.last, runner.next) == (utc(2024, 1, 1, 0, 0, 10), utc(2024, 1, 1, 0, 0, 20))


def test_a_long_invocation_skips_missed_occurrences_instead_of_queueing_them():
    clock = FakeClock(utc(2024, 1, 1, 0, 0, 10))
    runner, _ = runner_with("* * * * * *", clock)
    runner.next = utc(2024, 1, 1, 0, 0, 10)
    fired = clock()
    clock.now = utc(2024, 1, 1, 0, 0, 15)  # the invocation took 5 s
    runner._fire(fired, scheduled=True)
    assert runner.next == utc(2024, 1, 1, 0, 0, 11)  # already due: runs once at once, then on schedule
    runner._fire(clock(), scheduled=True)
    assert runner.next == utc(2024, 1, 1, 0, 0, 16)
