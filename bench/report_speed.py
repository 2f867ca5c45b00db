"""Speed of the annual report (``lapor-gateway report``) against a plain full read of the store.

Usage (from the repository root)::

    python bench/report_speed.py               # 100 000 complaints in a fresh SQLite store
    python bench/report_speed.py --rows 20000

Seeds a temporary SQLite central store with ``--rows`` complaints spread over one year (12
agencies, 8 channels, 10 regions), then times, in the same run: the baseline, a keyset-paged
read of every row of the year (what any report must at least do), and the report itself (read,
group, response times, SLA, CSV, PNG chart). Prints one table with the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forwarder.db import open_database  # noqa: E402
from gateway.report import read_rows, summarise, write_chart, write_csv  # noqa: E402

YEAR = 2026


async def seed(url: str, rows: int) -> None:
    rng = random.Random(76)
    db = await open_database(url, pool_size=2)
    start = datetime(YEAR, 1, 1, tzinfo=UTC)
    try:
        async with db.transaction() as tx:
            for i in range(rows):
                received = start + timedelta(seconds=rng.randrange(365 * 86400))
                answered = received + timedelta(hours=rng.expovariate(1 / 60))
                await tx.execute(
                    "INSERT INTO complaints (id, tracking_code, channel, account, native_id,"
                    " received_at, stored_us, classification, agency, region_code, payload)"
                    " VALUES ($1, $2, $3, 'a', $1, $4, $5, 'pengaduan', $6, $7, '{}')",
                    f"{i:032x}", f"T{i:010d}", f"ch{i % 8}",
                    received.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    int(answered.timestamp() * 1_000_000), f"agency-{i % 12}",
                    f"64.{i % 10:02d}")
    finally:
        await db.close()


async def baseline(url: str) -> int:
    """Read every row of the year in pages, doing nothing with them."""
    db = await open_database(url, pool_size=2)
    count, last = 0, (f"{YEAR}-01-01", "")
    try:
        while True:
            page = await db.fetch(
                "SELECT received_at, id, agency, stored_us FROM complaints"
                " WHERE (received_at > $1 OR (received_at = $1 AND id > $2))"
                " AND received_at < $3 ORDER BY received_at, id LIMIT 2000",
                last[0], last[1], f"{YEAR + 1}-01-01")
            count += len(page)
            if len(page) < 2000:
                return count
            last = (page[-1][0], page[-1][1])
    finally:
        await db.close()


async def report(url: str, chart: Path) -> int:
    db = await open_database(url, pool_size=2)
    try:
        rows = await read_rows(db, YEAR, "agency", progress_stream=io.StringIO())
    finally:
        await db.close()
    stats = summarise(rows, now=datetime(YEAR + 1, 2, 1, tzinfo=UTC))
    write_csv(stats, io.StringIO())
    write_chart(stats, chart, year=YEAR, by="agency")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(seed(url, args.rows))
        timings = []
        for name, run in (("baseline: paged read", lambda: baseline(url)),
                          ("report + CSV + chart", lambda: report(url, Path(tmp) / "c.png"))):
            started = time.perf_counter()
            rows = asyncio.run(run())
            timings.append((name, rows, time.perf_counter() - started))
    base = timings[0][2]
    print(f"{'run':<24} {'rows':>8} {'seconds':>8} {'rows/s':>9} {'vs baseline':>12}")
    for name, rows, seconds in timings:
        print(f"{name:<24} {rows:>8} {seconds:>8.2f} {rows / seconds:>9.0f} "
              f"{seconds / base:>11.2f}x")


if __name__ == "__main__":
    main()
