"""One forced retraining run in a fresh process (settings from the environment). Prints the
run as JSON; the parent measures wall time and peak RSS (wait4). ``phases``: this process's
resident memory (MiB) sampled each second, with the progress it had made, for profiling."""
import json
import threading
import time
from pathlib import Path

from shared.wiring import get_wiring


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


started = time.perf_counter()
progress = {"training rows": 0}
samples: list[tuple[float, float, int]] = []
done = threading.Event()


def sample() -> None:
    while not done.wait(1.0):
        samples.append((round(time.perf_counter() - started, 1), round(rss_mib()), progress["training rows"]))


last_chunk_at = [0.0]  # wall clock of the training read's last chunk: where fitting begins


def on_progress(what: str, count: int) -> None:
    progress[what] = progress.get(what, 0) + count
    last_chunk_at[0] = time.time()


threading.Thread(target=sample, daemon=True).start()
retraining = get_wiring().retraining
retraining.on_progress = on_progress
run = retraining.run(trigger="bench", force=True)
done.set()
print(json.dumps({"seconds": time.perf_counter() - started, "status": run.status, "reason": run.reason,
                  "training_rows": run.training_rows, "details": run.details, "metrics": run.metrics,
                  "phases": samples, "read_done_at": last_chunk_at[0]}, default=str))
