"""Timer triggers: the WebJobs TimerListener's schedule and firing rules.

Mirrored:

* ``schedule`` is NCRONTAB: six fields ``{second} {minute} {hour} {day}
  {month} {day-of-week}`` (five fields, without seconds, are accepted too, as
  the host does), or a TimeSpan ``hh:mm:ss`` interval (App Service plans
  only, in the host). NCRONTAB matches a day only when *both* day-of-month and
  day-of-week match (unlike Vixie cron's "either"), so croniter runs with
  ``day_or=False``; NCRONTAB has no ``L``, ``W``, ``#``, ``?`` or year field,
  and devhost refuses them too.
* Occurrences are computed in UTC, the host's default. (The host uses
  ``WEBSITE_TIME_ZONE``/``TZ`` when set; devhost warns and stays on UTC.)
* ``runOnStartup`` invokes once when the host starts.
* Invocations of one timer never overlap (the host holds a singleton lock):
  the next occurrence is computed from the time the timer fired, and if that
  has already passed when the invocation ends, it runs at once (missed
  occurrences are not queued up).
* The function gets an ``azure.functions.timer.TimerRequest`` with
  ``past_due=False``: the host reports past due only when its schedule monitor
  finds an occurrence missed while the app was stopped.

Not mirrored: ``useMonitor`` (no persisted schedule status, so no past-due
runs after downtime); ``schedule_status`` holds the in-memory Last/Next.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from azure.functions.timer import TimerRequest
from croniter import croniter

from .config import DevHostError, parse_timespan
from .functions import LoadedFunction

log = logging.getLogger("devhost")

_UNSUPPORTED_DAY = re.compile(r"[LW?#]", re.IGNORECASE)
_UNSUPPORTED_WEEKDAY = re.compile(r"[0-7]L|#|\?|^L$", re.IGNORECASE)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Schedule:
    """A timer schedule: an NCRONTAB expression or a fixed TimeSpan interval."""

    def __init__(self, expression: str):
        self.expression = expression.strip()
        fields = self.expression.split()
        self.interval: timedelta | None = None
        if len(fields) in (5, 6):
            day, weekday = fields[-3], fields[-1]
            if _UNSUPPORTED_DAY.search(day) or _UNSUPPORTED_WEEKDAY.search(weekday) or \
                    not croniter.is_valid(self.expression, second_at_beginning=True):
                raise DevHostError(f"schedule '{expression}' is not a valid NCRONTAB expression")
            self.has_seconds = len(fields) == 6
            return
        try:
            seconds = parse_timespan(self.expression, what="schedule")
        except DevHostError:
            seconds = 0
        if seconds <= 0:
            raise DevHostError(f"schedule '{expression}' was not recognized as a valid cron expression "
                               f"({{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}) or time span")
        self.interval = timedelta(seconds=seconds)

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (an aware UTC datetime)."""
        if self.interval is not None:
            return moment + self.interval
        return croniter(self.expression, moment, second_at_beginning=True, day_or=False).get_next(datetime)

    def describe(self) -> str:
        return f"every {self.interval}" if self.interval is not None else f"'{self.expression}' (UTC)"


class TimerRunner:
    """Fires one timer-triggered function on its schedule, one invocation at a time."""

    def __init__(self, function: LoadedFunction, schedule: Schedule, *, run_on_startup: bool = False,
                 clock: Callable[[], datetime] = utc_now):
        self.function = function
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self._clock = clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"devhost-timer-{function.spec.name}", daemon=True)
        self.last: datetime | None = None
        self.next: datetime = schedule.next_after(clock())

    def start(self) -> None:
        self.next = self.schedule.next_after(self._clock())  # loading other functions may have taken a while
        self._thread.start()

    def request_stop(self) -> None:
        self._stopping.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop firing; wait for a running invocation to finish."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        if self.run_on_startup and not self._stopping.is_set():
            self._fire(self._clock(), scheduled=False)
        while not self._stopping.is_set():
            delay = (self.next - self._clock()).total_seconds()
            if delay > 0 and self._stopping.wait(delay):
                break
            self._fire(self._clock(), scheduled=True)

    def _fire(self, fired_at: datetime, *, scheduled: bool) -> None:
        self.function.invoke(TimerRequest(past_due=False, schedule={"AdjustForDST": True}, schedule_status={
            "Last": self.last.isoformat() if self.last else None,
            "Next": self.next.isoformat(),
            "LastUpdated": self.last.isoformat() if self.last else None,
        }))
        # A timer that fires a little early still counts as its scheduled occurrence (host rule).
        base = max(fired_at, self.next) if scheduled else fired_at
        self.last = base
        self.next = self.schedule.next_after(base)
