"""One retraining run in a fresh process; prints wall time and peak RSS as JSON."""
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.wiring import get_wiring  # noqa: E402
from shared.reporting import build_report  # noqa: E402
from shared.retraining import run_retraining  # noqa: E402

started = time.perf_counter()
run = run_retraining(get_wiring(), trigger="bench", force=True, report_builder=build_report)
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "status": run.status,
                  "training_rows": run.training_rows, "metrics": run.metrics}))
