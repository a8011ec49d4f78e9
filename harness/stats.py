"""Latency statistics: the one percentile definition of tests, benchmarks and scripts.

A percentile here is the nearest-rank value of the sorted samples (numpy's
``method="higher"``): a sample that was really observed, never an interpolation.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def percentile(samples: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of ``samples``; 0.0 when there are none."""
    values = np.asarray(list(samples) if not isinstance(samples, np.ndarray) else samples, dtype=np.float64)
    if values.size == 0:
        return 0.0
    return float(np.percentile(values, p, method="higher"))


def summary(seconds: Iterable[float]) -> dict[str, Any]:
    """Median, p99 and max of durations given in seconds, as microseconds, with the count:
    the shape every benchmark row and report uses."""
    values = np.asarray(list(seconds) if not isinstance(seconds, np.ndarray) else seconds, dtype=np.float64) * 1e6
    if values.size == 0:
        return {"median_us": 0.0, "p99_us": 0.0, "max_us": 0.0, "n": 0}
    return {"median_us": float(np.median(values)), "p99_us": percentile(values, 99),
            "max_us": float(values.max()), "n": int(values.size)}


def in_ms(stats: dict[str, Any], key: str) -> float:
    """One figure of :func:`summary` in milliseconds, rounded for a report (``key``: median/p99/max)."""
    return round(float(stats[f"{key}_us"]) / 1000, 1)


def time_calls(call: Callable[[int], Any], repeats: int) -> dict[str, Any]:
    """:func:`summary` of ``repeats`` calls of ``call(i)`` (``i``: the repetition index)."""
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        call(i)
        samples[i] = time.perf_counter() - start
    return summary(samples)
