"""Bounded polling for tests that wait on background work (queue triggers, timers)."""
from __future__ import annotations

import time


def wait_for(condition, timeout: float = 15.0, what: str = "condition", interval: float = 0.05):
    """Poll ``condition`` until it returns something truthy; fail saying ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout:g}s: {what}")
        time.sleep(interval)
