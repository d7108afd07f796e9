"""Job round-trip overhead: ModelBay's submit -> runner -> finished against a bare RQ job, same queue, same run.

Both run on the embedded workers (RQ over fakeredis, a worker thread per queue) and poll for the end the
same way; the difference is ModelBay's job row, status transitions and pub/sub events. Prints a final
JSON line: {"bare_rq_ms_median", "modelbay_ms_median", "ratio", "jobs"}.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rq.job import Job  # noqa: E402

from modelbay.config import load_settings  # noqa: E402
from modelbay.engine.jobs.kinds import JobKind, register_kind
from modelbay.runtime import Runtime  # noqa: E402
from modelbay.workers import JobContext  # noqa: E402

JOBS = 40
NOOP = "bench.jobs.noop"  # by path: RQ workers cannot import functions from __main__


def noop(ctx: JobContext | None = None) -> dict:
    """Do nothing, so the measurement is the machinery around the job."""
    return {}


def _bare(runtime: Runtime) -> float:
    start = time.perf_counter()
    job = runtime.jobs.queue("cpu").enqueue(NOOP, None)
    while Job.fetch(job.id, connection=runtime.redis).get_status(refresh=True) != "finished":
        time.sleep(0.002)
    return (time.perf_counter() - start) * 1000


def _modelbay(runtime: Runtime) -> float:
    start = time.perf_counter()
    record, _ = runtime.jobs.submit("bench.noop", {}, requester="bench")
    while runtime.jobs.get(record.id).status != "finished":
        time.sleep(0.002)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    register_kind(JobKind("bench.noop", NOOP, "cpu", timeout=60))
    with tempfile.TemporaryDirectory() as home:
        runtime = Runtime(load_settings(home=Path(home), environment="test"))
        runtime.prepare()
        runtime.start_embedded_workers()
        try:
            _bare(runtime), _modelbay(runtime)  # warm up imports and connections
            bare, ours = [], []
            for _ in range(JOBS):  # interleaved, so machine noise hits both alike
                bare.append(_bare(runtime))
                ours.append(_modelbay(runtime))
        finally:
            runtime.close()
    result = {
        "bare_rq_ms_median": round(statistics.median(bare), 2),
        "modelbay_ms_median": round(statistics.median(ours), 2),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 2),
        "jobs": JOBS,
    }
    print(f"bare RQ job round trip     {result['bare_rq_ms_median']:8.2f} ms (median of {JOBS})")
    print(f"ModelBay job round trip    {result['modelbay_ms_median']:8.2f} ms (median of {JOBS})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
