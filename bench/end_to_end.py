"""End to end: from the webhook's 200 to the row in the central store, and the drain after a
broker outage.

Usage (from the repository root)::

    .venv/bin/python bench/end_to_end.py                          # full run (about 4 minutes)
    .venv/bin/python bench/end_to_end.py --duration 10 --outage 15    # quick look
    .venv/bin/python bench/end_to_end.py --store postgresql://postgres@127.0.0.1:5432/postgres

Starts ``lapor-gateway run`` (embedded broker; SQLite, or a fresh PostgreSQL database created
on the server of ``--store`` and dropped afterwards) with the WhatsApp webhook on.

1. Latency: signed WhatsApp webhooks at ``--rate`` per second (open loop) for ``--duration``
   seconds. For every accepted complaint: the central store's ``stored_us`` minus the moment
   the client got its 200. p50/p99 (goal: p99 <= 1 s at 1,000 complaints/s).
2. Outage: the embedded broker (``data_dir/embedded-broker.pid``) is frozen with SIGSTOP for
   ``--outage`` seconds while the same load goes on (accepted into the outbox only), then
   SIGCONT. Drain: backlog / time from SIGCONT until the last of it is in the central store,
   and the steady rate between 10% and 90% of the backlog (which leaves out the reconnect).
   Goal: >= 5,000 complaints/s from the outbox.

   ``--prefill N`` adds N complaints to the outbox while the broker is frozen, written straight
   into the gateway's database through its own :class:`forwarder.outbox.Outbox` (copies of a
   complaint the gateway accepted during the latency phase, each with its own id, tracking
   code, message id and text), so the backlog and the drain measurement do not depend on how
   fast the intake takes webhooks. The backlog is then the prefill plus what the load at
   ``--rate`` added during ``--outage``.

``--before TREE`` runs the same phases first against another source tree (e.g.
``git archive <base> | tar -x -C /tmp/before``) and prints both columns side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import orjson
from _common import PHONE_NUMBER_ID, ROOT, load, percentile, start_gateway, table

from forwarder.db import open_database
from forwarder.outbox import Outbox
from normalizer.ids import complaint_id, tracking_code
from normalizer.schema import Complaint

GOAL_P99_S = 1.0
GOAL_DRAIN = 5000.0


class Store:
    """Reads the central store the gateway writes (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        if self.url.startswith("sqlite:///"):
            conn = sqlite3.connect(f"file:{self.url.removeprefix('sqlite:///')}?mode=ro",
                                   uri=True, timeout=30)
            try:
                return list(conn.execute(sql.replace("$1", "?"), args))
            finally:
                conn.close()
        return asyncio.run(self._pg(sql, *args))

    async def _pg(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(self.url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM complaints")[0][0])  # type: ignore[call-overload]

    def stored_us(self, ids: list[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("'" + i + "'" for i in chunk)  # hex ids only
            for cid, stored in self.query(
                    f"SELECT id, stored_us FROM complaints WHERE id IN ({marks})"):
                out[str(cid)] = int(stored)  # type: ignore[call-overload]
        return out


def wait_count(store: Store, target: int, within: float) -> float | None:
    """Seconds until the store holds ``target`` complaints (None: not within ``within``)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if store.count() >= target:
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="complaints per second")
    parser.add_argument("--duration", type=float, default=30.0, help="latency phase, seconds")
    parser.add_argument("--outage", type=float, default=60.0, help="broker outage, seconds")
    parser.add_argument("--prefill", type=int, default=0,
                        help="complaints written straight into the outbox during the outage")
    parser.add_argument("--before", type=Path,
                        help="another source tree to measure first, shown side by side")
    parser.add_argument("--store", help="a PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--uvloop", action="store_true", help="run the gateway with --uvloop")
    args = parser.parse_args()

    title = (f"End to end ({'PostgreSQL' if args.store else 'SQLite'} store, embedded broker)")
    if args.before is None:
        print(table(["measure", "value", "goal", "verdict"], _measure(args, ROOT), title=title))
        return 0
    before = _measure(args, args.before.resolve())
    after = _measure(args, ROOT)
    rows = [[a[0], b[1], a[1], a[2], a[3]] for a, b in zip(after, before, strict=True)]
    print(table(["measure", "before", "after", "goal", "verdict (after)"], rows, title=title))
    return 0


def _measure(args: argparse.Namespace, tree: Path) -> list[list[object]]:
    """One gateway from ``tree``, the two phases, its rows."""
    pg_admin, pg_name = args.store, f"lapor_bench_{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        data_dir = Path(tmp)
        store_url = f"sqlite:///{data_dir}/lapor.db"
        extra: dict[str, str] = {}
        if pg_admin:
            store_url = pg_admin.rsplit("/", 1)[0] + "/" + pg_name
            asyncio.run(_pg_admin(pg_admin, f'CREATE DATABASE "{pg_name}"'))
            extra["LAPOR_STORE__URL"] = store_url
        gateway = start_gateway(data_dir, extra_env=extra,
                                args=["--uvloop"] if args.uvloop else [], tree=tree)
        store = Store(store_url)
        try:
            return _run(args, gateway.url, data_dir, store, gateway.pid)
        finally:
            gateway.stop()
            if pg_admin:
                asyncio.run(_pg_admin(pg_admin,
                                      f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))


def _cpu_s(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) a process (every thread) or one of its threads has used."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(args: argparse.Namespace, url: str, data_dir: Path,
         store: Store, gateway_pid: int) -> list[list[object]]:
    webhook = url + "/webhooks/whatsapp"
    concurrency = 256
    # Warm up: the sink's consumer group has joined and the first records went through.
    warm = load(webhook, concurrency=8, seconds=2, rate=50)
    if wait_count(store, warm.ok, within=120) is None:
        raise SystemExit("warm-up complaints did not reach the central store in 120 s")
    base = store.count()

    # 1. latency from 200 to the central store
    result = load(webhook, concurrency=concurrency, seconds=args.duration, rate=args.rate)
    ids = {complaint_id("whatsapp", PHONE_NUMBER_ID, wamid): at for wamid, at in result.answered}
    settle = wait_count(store, base + len(ids), within=120)
    stored = store.stored_us(list(ids))
    delays = [stored[cid] / 1e6 - at for cid, at in ids.items() if cid in stored]
    p50, p99 = percentile(delays, 50), percentile(delays, 99)
    rows: list[list[object]] = [
        ["offered rate (complaints/s)", args.rate, "", ""],
        ["accepted rate (complaints/s)", result.rate, "", ""],
        ["webhook p99 (ms)", result.p(99), "", ""],
        ["200 -> central store p50 (s)", p50, "", ""],
        ["200 -> central store p99 (s)", p99, f"<= {GOAL_P99_S:.0f}",
         "met" if p99 <= GOAL_P99_S and settle is not None else "MISSED"],
    ]
    before = store.count()

    # 2. broker outage: complaints pile up in the outbox, then drain
    broker_pid = int((data_dir / "embedded-broker.pid").read_text().strip())
    os.kill(broker_pid, signal.SIGSTOP)
    try:
        prefilled = asyncio.run(_prefill(store.url, args.prefill)) if args.prefill else 0
        outage = load(webhook, concurrency=concurrency, seconds=args.outage, rate=args.rate)
    finally:
        os.kill(broker_pid, signal.SIGCONT)
    resumed, resumed_us = time.monotonic(), time.time_ns() // 1000
    cpu = {gateway_pid: _cpu_s(gateway_pid), broker_pid: _cpu_s(broker_pid)}
    main_cpu = _cpu_s(gateway_pid, gateway_pid)  # the event loop's thread
    backlog = outage.ok + prefilled
    marks = {0.1: 0.0, 0.9: 0.0}
    done: float | None = None
    while time.monotonic() - resumed < 600:
        have = store.count() - before
        now = time.monotonic() - resumed
        for frac in marks:
            if not marks[frac] and have >= frac * backlog:
                marks[frac] = now
        if have >= backlog:
            done = now
            break
        time.sleep(0.05)
    # CPU per complaint drained: what the machine's other load does not change much.
    per_k = {pid: (_cpu_s(pid) - used) / backlog * 1000 for pid, used in cpu.items()}
    main_per_k = (_cpu_s(gateway_pid, gateway_pid) - main_cpu) / backlog * 1000
    # Which end limited the drain: the publisher (outbox -> Kafka) or the sink (-> store)?
    published = store.query("SELECT MAX(published_us) FROM outbox")[0][0]
    published_s = (int(published) - resumed_us) / 1e6  # type: ignore[call-overload]
    overall = backlog / done if done else 0.0
    steady = (0.8 * backlog / (marks[0.9] - marks[0.1])) if marks[0.9] > marks[0.1] else 0.0
    rows += [
        ["outage (s)", args.outage, "", ""],
        ["backlog: prefilled + accepted in outage", backlog, "", ""],
        ["drain: resume -> 10% stored (s)", marks[0.1], "", ""],
        ["drain: resume -> all published (s)", published_s, "", ""],
        ["drain: resume -> all stored (s)", done if done is not None else "not in 600 s", "", ""],
        ["drain: gateway CPU per 1,000 (s)", per_k[gateway_pid], "", ""],
        ["  of which the event loop's thread (s)", main_per_k, "", ""],
        ["drain: broker CPU per 1,000 (s)", per_k[broker_pid], "", ""],
        ["drain rate, overall (complaints/s)", overall, f">= {GOAL_DRAIN:,.0f}",
         "met" if overall >= GOAL_DRAIN else "MISSED"],
        ["drain rate, 10%-90% (complaints/s)", steady, f">= {GOAL_DRAIN:,.0f}",
         "met" if steady >= GOAL_DRAIN else "MISSED"],
    ]
    return rows


async def _prefill(url: str, count: int) -> int:
    """Add ``count`` complaints to the outbox through the gateway's own :class:`Outbox`:
    copies of the newest complaint it accepted, each with its own message id (hence id and
    tracking code) and text. Returns how many were added."""
    db = await open_database(url, migrate=False)
    try:
        row = await db.fetchrow(
            "SELECT payload, raw_payload, raw_content_type, reply_hints, sender_key"
            " FROM outbox ORDER BY created_us DESC LIMIT 1")
        if row is None:
            raise SystemExit("nothing in the outbox to copy for --prefill")
        template = Complaint.from_json(row[0])
        hints = orjson.loads(row[3] or "{}")
        tag = uuid.uuid4().hex[:8]
        async with Outbox(db) as outbox:
            async def add(i: int) -> bool:
                wamid = f"wamid.prefill.{tag}.{i}"
                cid = complaint_id("whatsapp", PHONE_NUMBER_ID, wamid)
                complaint = template.model_copy(update={
                    "id": cid, "tracking_code": tracking_code(cid), "native_id": wamid,
                    "body": f"{template.body} (prefill {i})"})
                added = await outbox.add(complaint, bytes(row[1]), row[2], hints, row[4])
                return not added.duplicate

            added = 0
            for start in range(0, count, 2048):  # bounded fan-out; the outbox groups commits
                added += sum(await asyncio.gather(
                    *(add(i) for i in range(start, min(count, start + 2048)))))
        return added
    finally:
        await db.close()


async def _pg_admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
