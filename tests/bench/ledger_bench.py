"""The billing ledger's memory: RSS added by a million unique post ids in one UTC day.

    python -m tests.bench.ledger_bench [--ids 1000000] [--python-set]

Runs in its own process (so nothing else's memory counts): VmRSS after the imports, then after
counting the ids in batches of 100 (as the stream hands them over), and the peak (VmHWM, which
includes the moment a merge holds two copies of the array). --python-set measures the naive
alternative, a Python set of id strings, for comparison.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

MB = 1024 * 1024
FIRST_ID = 1_996_000_000_000_000_000  # snowflakes of late 2026


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def measure(ids: int, python_set: bool) -> dict:
    from collector.telemetry.ledger import BillingLedger

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        ledger = BillingLedger(Path(tmp))
        naive: set[str] = set()
        before, started = _status_kb("VmRSS"), time.process_time()
        for start in range(FIRST_ID, FIRST_ID + ids, 100):
            batch = range(start, min(start + 100, FIRST_ID + ids))
            if python_set:
                naive.update(map(str, batch))
            else:
                ledger.add(batch)
        cpu = time.process_time() - started
        counted = len(naive) if python_set else ledger.billable_today()
        after, peak = _status_kb("VmRSS"), _status_kb("VmHWM")
        ledger.close()
    return {
        "ids": counted,
        "rss_added_mb": (after - before) * 1024 / MB,
        "peak_added_mb": (peak - before) * 1024 / MB,
        "cpu_seconds": cpu,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000)
    parser.add_argument("--python-set", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.ids, args.python_set)
    name = "set of str (naive)" if args.python_set else "billing ledger"
    print(
        f"{name:<22} {result['ids']:>9} ids: +{result['rss_added_mb']:.1f} MB RSS "
        f"(peak +{result['peak_added_mb']:.1f} MB), {result['cpu_seconds']:.2f} CPU s"
    )


if __name__ == "__main__":
    main()
