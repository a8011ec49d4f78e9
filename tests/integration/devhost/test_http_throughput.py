"""devhost must sustain >= 300 small POSTs/s on this project's 2-core machines (a trivial function)."""
from __future__ import annotations

import pytest

from devhost.benchmark import run_benchmark


@pytest.mark.slow
def test_sustains_300_requests_per_second():
    result = run_benchmark(seconds=3, processes=2, threads=4)
    assert result["errors"] == 0, result
    assert result["requests_per_second"] >= 300, result
