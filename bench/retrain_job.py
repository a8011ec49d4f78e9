"""One retraining run in a fresh process; prints wall time and peak RSS as JSON."""
import json
import resource
import time

from shared.wiring import get_wiring

started = time.perf_counter()
run = get_wiring().retraining.run(trigger="bench", force=True)
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "status": run.status,
                  "training_rows": run.training_rows, "metrics": run.metrics}))
