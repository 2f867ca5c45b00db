"""Near-duplicate lookups against a durable index of a million complaints.

Usage (from the repository root)::

    python bench/dedup_scale.py                        # SQLite file, 0 / 100k / 1M stored
    python bench/dedup_scale.py --count 200000         # smaller
    python bench/dedup_scale.py --store postgresql://postgres@127.0.0.1/lapor_bench
    python bench/dedup_scale.py --reuse /tmp/dedup-1m.db   # keep the filled SQLite file;
                                                       # a second run measures it unfilled
    git archive COMMIT | tar -x -C /tmp/before         # then, in the same run:
    python bench/dedup_scale.py --reuse /tmp/dedup-1m.db --before /tmp/before

The store is the gateway's own (migrations from ``forwarder/migrations``); it is filled in
stages (empty, ``--baseline``, ``--count``) with bulk inserts (SQLite) or COPY (PostgreSQL) of
synthetic complaints whose index keys come from the same code path as the intake's
(:func:`normalizer.similarity.band_hashes` over MinHash signatures, block keys of real
fingerprints): 90 % random signatures (distinct texts), 10 % near copies of realistic
complaints (half their hash values kept, so they share LSH bands with the queries), each with
the place/category block keys of one of a few thousand realistic complaints (so block keys
are as hot as a big city's common problems), received over the last ``--days`` (two years
by default; ``--days 29`` puts all of them inside the 30-day window, the worst case) and
numbered (``seq``) in the order they arrived, as a gateway numbers them.

After each stage a fresh child process opens the store as a gateway does and runs the intake's
lookup (:meth:`forwarder.fingerprints.FingerprintIndex.candidates` + :func:`normalizer.dedup
.decide`) for realistic queries, reporting lookups per second, latency and its peak resident
memory. The fingerprinting of the query text is measured apart (it runs once per complaint
whatever the store's size). Goals: >= 2,000 lookups/s and < 2 GiB resident at 1,000,000.
``--before TREE`` measures an earlier checkout's lookup on the same stores in the same run
(the machine is shared: compare the ratio, not numbers from different runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from forwarder.db import open_database
from forwarder.fingerprints import FingerprintIndex
from normalizer.dedup import decide
from normalizer.routing import Router
from normalizer.similarity import (
    NUM_PERM,
    Fingerprint,
    band_hashes,
    fingerprint,
    index_hashes,
    key_hash,
)

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "tests" / "data" / "complaints_eval.jsonl"
GOAL_LOOKUPS = 2000.0
GOAL_RSS_MIB = 2048.0
WINDOW_US = 30 * 86400 * 1_000_000
CHUNK = 50_000  # synthetic complaints generated and written per round
NEAR_COPY_SHARE = 0.10
STREETS = ["Pahlawan", "Juanda", "Ahmad Yani", "Antasari", "Pramuka", "Suryanata",
           "Gatot Subroto", "Sudirman", "Siradj Salman", "Wahid Hasyim", "Cendana", "Merdeka",
           "Pemuda", "Slamet Riyadi", "Mulawarman", "Kesuma Bangsa", "Dr. Soetomo",
           "Basuki Rahmat", "Agus Salim", "Bhayangkara"]


def realistic_texts(seed: int, count: int) -> list[str]:
    """Variants of the evaluation set's complaints: another street, RT, a day count."""
    rows = [json.loads(line)["text"] for line in EVAL.read_text("utf-8").splitlines() if line]
    rng = random.Random(seed)
    out = []
    for i in range(count):
        base = rows[i % len(rows)]
        out.append(f"{base} Lokasi Jl. {rng.choice(STREETS)} RT {rng.randint(1, 40):02d}, "
                   f"sudah {rng.randint(2, 30)} hari.")
    return out


def now_us() -> int:
    return time.time_ns() // 1000


# --------------------------------------------------------------------------- filling


class Pool:
    """Realistic fingerprints whose block keys and metadata the synthetic rows borrow."""

    def __init__(self, router: Router, size: int) -> None:
        self.fingerprints = [fingerprint(t, router) for t in realistic_texts(1, size)]
        self.prefixes = [fp.to_bytes()[:-4 * NUM_PERM] for fp in self.fingerprints]
        self.blocks = [[key_hash(k) for k in fp.block_keys()] for fp in self.fingerprints]
        self.signatures = np.stack([fp.signature.hashvalues for fp in self.fingerprints])


def arrivals(rng: np.random.Generator, count: int, days: float) -> np.ndarray[Any, Any]:
    """``count`` receive times over the last ``days``, oldest first: a gateway numbers
    fingerprints (``seq``) as complaints arrive, so the window's rows are the newest ``seq``s,
    next to each other in the table, as in a real store."""
    return np.sort(now_us() - rng.integers(0, int(days * 86400 * 1_000_000), size=count))


def synthetic(pool: Pool, start: int, received: np.ndarray[Any, Any], rng: np.random.Generator,
              near_share: float) -> tuple[list[tuple[Any, ...]], np.ndarray[Any, Any]]:
    """Complaints received at ``received`` from sequence number ``start``: fingerprint rows and
    their ``(band_key, received_us, seq)`` index rows."""
    count = len(received)
    sigs = rng.integers(0, 2**32 - 1, size=(count, NUM_PERM), dtype=np.uint64).astype(np.uint32)
    which = rng.integers(0, len(pool.fingerprints), size=count)
    near = rng.random(count) < near_share
    keep = rng.random((count, NUM_PERM)) < 0.5
    sigs = np.where(near[:, None] & keep, pool.signatures[which], sigs)
    seqs = np.arange(start, start + count, dtype=np.int64)
    bands = band_hashes(sigs)
    rows = []
    index: list[np.ndarray[Any, Any]] = [
        np.stack([bands.ravel(), np.repeat(received, bands.shape[1]),
                  np.repeat(seqs, bands.shape[1])], axis=1)]
    blocks: list[tuple[int, int, int]] = []
    sig_bytes = sigs.astype("<u4")
    for i in range(count):
        seq, w = int(seqs[i]), int(which[i])
        cid = f"{seq:032x}"
        rows.append((seq, cid, cid, int(received[i]), None, None,
                     pool.prefixes[w] + sig_bytes[i].tobytes()))
        blocks.extend((k, int(received[i]), seq) for k in pool.blocks[w])
    if blocks:
        index.append(np.asarray(blocks, dtype=np.int64))
    return rows, np.concatenate(index)


def fill_sqlite(path: Path, pool: Pool, start: int, count: int, seed: int,
                near_share: float, days: float) -> None:
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    conn.execute("BEGIN")
    index_parts = []
    received = arrivals(rng, count, days)
    for offset in range(0, count, CHUNK):
        rows, index = synthetic(pool, start + offset, received[offset:offset + CHUNK], rng,
                                near_share)
        conn.executemany("INSERT INTO fingerprints (seq, complaint_id, cluster_id, received_us,"
                         " region, agency, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        index_parts.append(index)
    index = np.concatenate(index_parts)
    del index_parts
    index = index[np.lexsort((index[:, 2], index[:, 1], index[:, 0]))]  # B-tree order
    for offset in range(0, len(index), 1_000_000):
        conn.executemany("INSERT OR IGNORE INTO lsh_bands (band_key, received_us, seq)"
                         " VALUES (?, ?, ?)", index[offset:offset + 1_000_000].tolist())
    conn.execute("COMMIT")
    conn.close()


async def fill_postgres(url: str, pool: Pool, start: int, count: int, seed: int,
                        near_share: float, days: float) -> None:
    rng = np.random.default_rng(seed)
    conn = await asyncpg.connect(url)
    try:
        index_parts = []
        received = arrivals(rng, count, days)
        for offset in range(0, count, CHUNK):
            rows, index = synthetic(pool, start + offset, received[offset:offset + CHUNK], rng,
                                    near_share)
            await conn.copy_records_to_table(
                "fingerprints", records=rows,
                columns=["seq", "complaint_id", "cluster_id", "received_us", "region", "agency",
                         "fingerprint"])
            index_parts.append(index)
        index = np.concatenate(index_parts)
        del index_parts
        index = np.unique(index, axis=0)  # sorted, and a key repeated in one row set once
        for offset in range(0, len(index), 1_000_000):
            await conn.copy_records_to_table(
                "lsh_bands", records=index[offset:offset + 1_000_000].tolist(),
                columns=["band_key", "received_us", "seq"])
        await conn.execute("SELECT setval(pg_get_serial_sequence('fingerprints', 'seq'),"
                           " (SELECT max(seq) FROM fingerprints))")
        await conn.execute("ANALYZE fingerprints; ANALYZE lsh_bands")
    finally:
        await conn.close()


# --------------------------------------------------------------------------- measuring


async def measure(url: str, lookups: int, concurrency: int) -> dict[str, float]:
    """The intake's lookup, ``lookups`` times (run in a fresh process: its RSS is the gateway's
    cost of the index)."""
    router = Router.from_files()
    queries = [fingerprint(t, router) for t in realistic_texts(2, 500)]
    started = time.perf_counter()
    for text in realistic_texts(3, 200):
        fingerprint(text, router)
    fingerprint_ms = (time.perf_counter() - started) * 1000 / 200
    db = await open_database(url, pool_size=max(2, concurrency + 1))
    index = FingerprintIndex(db)

    latencies: list[float] = []
    candidates = 0
    duplicates = 0

    async def one(fp: Fingerprint) -> None:
        nonlocal candidates, duplicates
        t0 = time.perf_counter()
        found = await index.candidates(index_hashes(fp), now_us() - WINDOW_US)
        verdict = decide(fp, found)
        latencies.append(time.perf_counter() - t0)
        candidates += len(found)
        duplicates += verdict.is_duplicate

    async def worker(k: int) -> None:
        for i in range(k, lookups, concurrency):
            await one(queries[i % len(queries)])

    for text in realistic_texts(4, 300):  # warm the connection and the page cache
        await index.candidates(index_hashes(fingerprint(text, router)), now_us() - WINDOW_US)
    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    stored = await index.count()
    await db.close()
    latencies.sort()
    return {
        "stored": stored, "lookups_s": lookups / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
        "candidates": candidates / lookups, "labelled": duplicates / lookups,
        "rss_mib": peak_rss_mib(),
        "fingerprint_ms": fingerprint_ms,
    }


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent that spawned it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_in_child(url: str, lookups: int, concurrency: int,
                     tree: Path = ROOT) -> dict[str, float]:
    """:func:`measure` in a fresh process, with the code of ``tree`` (this checkout, or an
    earlier one given with ``--before``)."""
    out = subprocess.run(
        [sys.executable, str(tree / "bench" / "dedup_scale.py"), "--measure", url,
         "--lookups", str(lookups), "--concurrency", str(concurrency)],
        check=True, capture_output=True, text=True, cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)})
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def store_size(url: str) -> str:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        total = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        return f"{total / 2**20:,.0f} MiB"
    return "-"


async def prepare(url: str) -> None:
    db = await open_database(url, pool_size=2)
    await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="stored complaints")
    parser.add_argument("--baseline", type=int, default=100_000,
                        help="the middle stage (the empty store is always measured)")
    parser.add_argument("--store", help="postgresql://... (default: a new SQLite file)")
    parser.add_argument("--lookups", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="lookups in flight (default: 1 on SQLite, 4 on PostgreSQL)")
    parser.add_argument("--near-copies", type=float, default=NEAR_COPY_SHARE,
                        help="share of stored complaints that are near copies of realistic "
                             "ones (0.1: every realistic matter reported ~300 times a million)")
    parser.add_argument("--days", type=float, default=730.0,
                        help="stored complaints were received over this many days (730: two "
                             "years kept; 29: every one inside the 30-day window, the worst "
                             "case)")
    parser.add_argument("--pool", type=int, default=3000, help="realistic complaints to borrow")
    parser.add_argument("--reuse", metavar="PATH", type=Path,
                        help="SQLite file: filled (all stages) and kept when missing; when it "
                             "exists, only the empty store and this file are measured")
    parser.add_argument("--before", metavar="TREE", type=Path,
                        help="an earlier checkout (git archive COMMIT | tar -x -C TREE): its "
                             "lookup is measured on each stage's store too, in the same run")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    postgres = (args.store or args.measure or "").startswith("postgres")
    concurrency = args.concurrency or (4 if postgres else 1)
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure, args.lookups, concurrency))))
        return 0

    print("$ " + " ".join(["python", "bench/dedup_scale.py", *sys.argv[1:]]))
    with tempfile.TemporaryDirectory(prefix="dedup-scale-") as tmp:
        if args.reuse is not None and args.reuse.exists():
            return measure_reused(f"sqlite:///{tmp}/lapor.db", f"sqlite:///{args.reuse}",
                                  args.lookups, concurrency, args.before)
        url = args.store or f"sqlite:///{args.reuse or Path(tmp) / 'lapor.db'}"
        asyncio.run(prepare(url))
        started = time.perf_counter()
        pool = Pool(Router.from_files(), args.pool)
        print(f"store {url.split('@')[-1]}; {args.pool} realistic fingerprints in "
              f"{time.perf_counter() - started:.1f} s; near copies {args.near_copies:.0%}; "
              f"received over {args.days:g} days (window 30); "
              f"concurrency {concurrency}")
        print(HEADER)
        results = []
        stored = 0
        for stage, target in enumerate(sorted({0, min(args.baseline, args.count), args.count})):
            started = time.perf_counter()
            if target > stored:
                if postgres:
                    asyncio.run(fill_postgres(url, pool, stored + 1, target - stored, stage,
                                              args.near_copies, args.days))
                else:
                    fill_sqlite(Path(url.removeprefix("sqlite:///")), pool, stored + 1,
                                target - stored, stage, args.near_copies, args.days)
                stored = target
            fill_s = time.perf_counter() - started
            results.append(measure_stage(url, args.lookups, concurrency, fill_s, args.before))
        summarise(results)
    return 0


HEADER = (f"{'stored':>10} {'fill s':>7} {'lookups/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'cands':>6} {'RSS MiB':>8} {'store':>10}")


def measure_stage(url: str, lookups: int, concurrency: int, fill_s: float,
                  before: Path | None = None) -> dict[str, float]:
    """Measure the store in a child process and print its row; with ``before``, first the
    earlier checkout's lookup on the same store (its row says ``before`` for the fill time)."""
    if before is not None:
        old = measure_in_child(url, lookups, concurrency, before)
        print(row(old, f"{'before':>7}", url), flush=True)
    r = measure_in_child(url, lookups, concurrency)
    print(row(r, f"{fill_s:>7.1f}", url), flush=True)
    if before is not None:
        print(f"{'':>10} {'after/before':>18} {r['lookups_s'] / old['lookups_s']:>5.2f}x",
              flush=True)
        r["before_fingerprint_ms"] = old["fingerprint_ms"]
    return r


def row(r: dict[str, float], second: str, url: str) -> str:
    """One row of the table (:data:`HEADER`)."""
    return (f"{int(r['stored']):>10,} {second} {r['lookups_s']:>10,.0f} "
            f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['candidates']:>6.1f} "
            f"{r['rss_mib']:>8.0f} {store_size(url):>10}")


def summarise(results: list[dict[str, float]]) -> None:
    """The last stage against the empty store, and the goals."""
    first, last = results[0], results[-1]
    print(f"\nlookups/s at {int(last['stored']):,} vs empty: "
          f"{last['lookups_s'] / first['lookups_s']:.2f}x; goal >= {GOAL_LOOKUPS:,.0f}/s: "
          f"{'ok' if last['lookups_s'] >= GOAL_LOOKUPS else 'MISSED'}; RSS goal "
          f"< {GOAL_RSS_MIB:,.0f} MiB: {'ok' if last['rss_mib'] < GOAL_RSS_MIB else 'MISSED'}")
    print(f"fingerprint of one realistic complaint (once per complaint, any store size): "
          f"{last['fingerprint_ms']:.2f} ms" + (f" (before: {last['before_fingerprint_ms']:.2f} ms)"
                                                if "before_fingerprint_ms" in last else ""))


def measure_reused(empty_url: str, url: str, lookups: int, concurrency: int,
                   before: Path | None = None) -> int:
    """``--reuse`` of a filled file: the empty store (the baseline), then the file as it is
    (migrated first, as a gateway would on start)."""
    print(f"store {url} (reused, not filled); concurrency {concurrency}")
    print(HEADER)
    results = []
    for each in (empty_url, url):
        asyncio.run(prepare(each))
        results.append(measure_stage(each, lookups, concurrency, 0.0, before))
    summarise(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
