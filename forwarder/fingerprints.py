"""The durable near-duplicate index: fingerprints and their LSH/block keys (migration 0008).

The decision is :mod:`normalizer.dedup`'s; this module only stores and finds. Because the index
lives in the database, a restarted gateway and every gateway instance sharing a PostgreSQL
store see the same complaints. A lookup (:meth:`FingerprintIndex.candidates`) is one statement:
for each key an index range scan over ``(band_key, received_us)``, newest first, bounded by the
time window and ``per_key`` rows, then at most ``limit`` fingerprints. So a hot key (a common
category in a big city) costs the same as a rare one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from forwarder.db import Database, Executor, Row
from normalizer.dedup import StoredFingerprint
from normalizer.similarity import Fingerprint

#: Parsed candidates kept in memory (about 3 KiB each with their parsed places): the newest
#: rows of a month's busy keys, read lookup after lookup (about 180 MiB when full).
CACHE_SIZE = 60_000


@dataclass(frozen=True, slots=True)
class NewFingerprint:
    """What :meth:`FingerprintIndex.record` keeps for one complaint."""

    complaint_id: str
    cluster_id: str
    received_us: int
    region: str | None
    agency: str | None
    fingerprint: Fingerprint
    keys: Sequence[int]


@lru_cache(maxsize=256)
def _candidates_sql(keys: int) -> str:
    """The lookup of :meth:`FingerprintIndex.candidates` for ``keys`` keys (``$4``...): each
    key's newest ``$2`` index entries since ``$1``, the newest ``$3`` of them all (the index
    rows carry ``received_us``, so only the rows kept are read from ``fingerprints``)."""
    scans = " UNION ".join(
        f"SELECT * FROM (SELECT seq, received_us FROM lsh_bands WHERE band_key = ${i + 4}"
        f" AND received_us >= $1 ORDER BY received_us DESC LIMIT $2) AS k{i}"
        for i in range(keys))
    return ("SELECT f.complaint_id, f.cluster_id, f.fingerprint, f.region, f.agency,"
            f" f.received_us FROM (SELECT seq, received_us FROM ({scans}) AS u"
            " ORDER BY received_us DESC LIMIT $3) AS c JOIN fingerprints f ON f.seq = c.seq"
            " ORDER BY f.received_us DESC")


class FingerprintIndex:
    """The ``fingerprints`` and ``lsh_bands`` tables."""

    def __init__(self, db: Database, *, per_key: int = 10, limit: int = 100,
                 cache_size: int = CACHE_SIZE) -> None:
        if per_key < 1 or limit < 1:
            raise ValueError("per_key and limit must be at least 1")
        self._db = db
        self._per_key = per_key
        self._limit = limit
        self._cache_size = cache_size
        #: Stored fingerprints never change, so the ones read recently (the newest rows of
        #: busy keys, read by lookup after lookup) keep what was parsed from them.
        self._cache: OrderedDict[str, StoredFingerprint] = OrderedDict()

    async def candidates(self, keys: Sequence[int], since_us: int) -> list[StoredFingerprint]:
        """Stored complaints received at or after ``since_us`` sharing a key, newest first
        (their fingerprints are read lazily, see :class:`StoredFingerprint`)."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return []
        rows = await self._db.fetch(_candidates_sql(len(unique)), since_us, self._per_key,
                                    self._limit, *unique)
        return [self._cached(row) for row in rows]

    def _cached(self, row: Row) -> StoredFingerprint:
        entry = self._cache.get(row[0])
        if entry is not None:
            self._cache.move_to_end(row[0])
            return entry
        entry = StoredFingerprint(row[0], row[1], bytes(row[2]), row[3], row[4], int(row[5]))
        self._cache[row[0]] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

    async def record(self, entry: NewFingerprint) -> bool:
        """Index a complaint (idempotent: a complaint already indexed is left as it is).
        Returns True when it was new."""
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "INSERT INTO fingerprints (complaint_id, cluster_id, received_us, region,"
                " agency, fingerprint) VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT DO NOTHING RETURNING seq",
                entry.complaint_id, entry.cluster_id, entry.received_us, entry.region,
                entry.agency, entry.fingerprint.to_bytes())
            if row is None:
                return False
            keys = list(dict.fromkeys(entry.keys))
            if keys:
                values = ", ".join(f"(${i + 3}, $1, $2)" for i in range(len(keys)))
                await tx.execute(
                    f"INSERT INTO lsh_bands (band_key, received_us, seq) VALUES {values}"
                    " ON CONFLICT DO NOTHING",
                    entry.received_us, int(row[0]), *keys)
        return True

    async def count(self) -> int:
        """How many complaints are indexed."""
        row = await self._db.fetchrow("SELECT COUNT(*) FROM fingerprints")
        return int(row[0]) if row else 0


#: Parameters per statement: below SQLite's limit (32,766) and PostgreSQL's (65,535).
_MAX_PARAMS = 30_000


async def record_many(tx: Executor, entries: Sequence[NewFingerprint]) -> int:
    """Index ``entries`` inside the caller's transaction (the outbox's group commit, so a
    complaint and its fingerprint are committed together): one multi-row statement per table
    however many entries, instead of a transaction each. Complaints indexed already are left
    as they are (idempotent). Returns how many were new."""
    unique = list({entry.complaint_id: entry for entry in entries}.values())
    if not unique:
        return 0
    values = ", ".join(f"(${6 * i + 1}, ${6 * i + 2}, ${6 * i + 3}, ${6 * i + 4}, ${6 * i + 5},"
                       f" ${6 * i + 6})" for i in range(len(unique)))
    rows = await tx.fetch(
        "INSERT INTO fingerprints (complaint_id, cluster_id, received_us, region, agency,"
        f" fingerprint) VALUES {values} ON CONFLICT DO NOTHING RETURNING seq, complaint_id",
        *(value for e in unique for value in (e.complaint_id, e.cluster_id, e.received_us,
                                               e.region, e.agency, e.fingerprint.to_bytes())))
    by_id = {e.complaint_id: e for e in unique}
    bands = [(key, by_id[str(cid)].received_us, int(seq)) for seq, cid in rows
             for key in dict.fromkeys(by_id[str(cid)].keys)]
    per_statement = _MAX_PARAMS // 3
    for start in range(0, len(bands), per_statement):
        chunk = bands[start:start + per_statement]
        values = ", ".join(f"(${3 * i + 1}, ${3 * i + 2}, ${3 * i + 3})"
                           for i in range(len(chunk)))
        await tx.execute(f"INSERT INTO lsh_bands (band_key, received_us, seq) VALUES {values}"
                         " ON CONFLICT DO NOTHING", *(v for band in chunk for v in band))
    return len(rows)
