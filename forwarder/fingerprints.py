"""The durable near-duplicate index: fingerprints and their LSH/block keys (migration 0008).

The decision is :mod:`normalizer.dedup`'s; this module only stores and finds. Because the index
lives in the database, a restarted gateway and every gateway instance sharing a PostgreSQL
store see the same complaints.

A lookup (:meth:`FingerprintIndex.candidates`) reads ids first: one statement that, for each
key, range-scans the ``(band_key, received_us, seq)`` primary key of ``lsh_bands`` newest first,
bounded by the time window and ``per_key`` rows, and keeps the newest ``limit`` complaints (only
the index is read, never the ``fingerprints`` table). So a hot key (a common category in a big
city) costs the same as a rare one. Stored fingerprints never change, so those this process
read or recorded recently are kept in memory (by ``seq``); only the others are read, by primary
key, in a second statement, which a lookup whose candidates are all in memory skips.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from forwarder.db import Database, Executor, row_placeholders
from normalizer.dedup import StoredFingerprint
from normalizer.similarity import Fingerprint

if TYPE_CHECKING:
    from forwarder.bands import BandWriter

#: Stored fingerprints kept in memory: those this process indexed and those lookups read, as
#: stored (about 1.2 KiB each with the cache's own slot: the bytes, and where a lookup found
#: the signature's values in them, not a copy; parsed places live in
#: :data:`normalizer.dedup.META_CACHE`). A 30-day window of a million complaints over two years
#: (about 41,000) fits: its lookups never read fingerprints back (about 70 MiB when full).
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


#: Fingerprints a transaction indexed: ``(seq, entry)``, ascending ``seq``.
Indexed = Sequence[tuple[int, NewFingerprint]]


@lru_cache(maxsize=256)
def _ids_sql(keys: int) -> str:
    """Step one of :meth:`FingerprintIndex.candidates` for ``keys`` keys (``$4``...): each
    key's newest ``$2`` index entries since ``$1``, then the newest ``$3`` complaints of them
    all, as ``(seq, received_us)`` (the index rows carry ``received_us``: the table is not
    read). ``UNION ALL`` and ``GROUP BY``: one pass, no per-row duplicate check."""
    scans = " UNION ALL ".join(
        f"SELECT * FROM (SELECT seq, received_us FROM lsh_bands WHERE band_key = ${i + 4}"
        f" AND received_us >= $1 ORDER BY received_us DESC LIMIT $2) AS k{i}"
        for i in range(keys))
    return (f"SELECT seq, MAX(received_us) AS newest FROM ({scans}) AS u GROUP BY seq"
            " ORDER BY newest DESC LIMIT $3")


#: Step two reads this many fingerprints, or a power of two below it, per statement (padded
#: with a repeated ``seq``): a handful of statement shapes, each prepared once.
_FETCH_MAX = 128


@lru_cache(maxsize=16)
def _rows_sql(count: int) -> str:
    """Step two: the stored fingerprints of ``count`` ``seq``s."""
    marks = ", ".join(f"${i + 1}" for i in range(count))
    return ("SELECT seq, complaint_id, cluster_id, fingerprint, region, agency, received_us"
            f" FROM fingerprints WHERE seq IN ({marks})")


def _padded(seqs: list[int]) -> list[int]:
    size = 1
    while size < len(seqs):
        size *= 2
    return seqs + [seqs[0]] * (size - len(seqs))


class FingerprintIndex:
    """The ``fingerprints`` and ``lsh_bands`` tables."""

    def __init__(self, db: Database, *, per_key: int = 10, limit: int = 100,
                 cache_size: int = CACHE_SIZE, bands: BandWriter | None = None) -> None:
        """``bands``: where the band rows are written and looked up when not in ``db``'s
        ``lsh_bands`` (SQLite: a file of their own, written after the fingerprints)."""
        if per_key < 1 or limit < 1:
            raise ValueError("per_key and limit must be at least 1")
        self._db = db
        self._bands = bands
        self._bands_db = bands.db if bands is not None else db
        self._per_key = per_key
        self._limit = limit
        self._cache_size = cache_size
        #: By ``seq``: stored fingerprints never change, so the ones read or recorded recently
        #: keep what was parsed from them and are not read again.
        self._cache: OrderedDict[int, StoredFingerprint] = OrderedDict()

    @property
    def behind(self) -> bool:
        """Whether too many band rows wait to be written (:attr:`BandWriter.full`)."""
        return self._bands is not None and self._bands.full

    async def candidates(self, keys: Sequence[int], since_us: int) -> list[StoredFingerprint]:
        """Stored complaints received at or after ``since_us`` sharing a key, newest first
        (their fingerprints are read lazily, see :class:`StoredFingerprint`)."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            return []
        # Handed over but not yet written first: a group written meanwhile is in the store.
        unwritten = ({} if self._bands is None
                     else self._bands.pending(unique, since_us, self._per_key))
        ids = await self._bands_db.fetch(_ids_sql(len(unique)), since_us, self._per_key,
                                         self._limit, *unique)
        seqs = [int(row[0]) for row in ids]
        if unwritten:  # newer than anything written: the newest ``limit`` of both
            newest = {int(seq): int(received_us) for seq, received_us in ids} | unwritten
            seqs = sorted(newest, key=lambda seq: newest[seq], reverse=True)[:self._limit]
        found: dict[int, StoredFingerprint] = {}
        cache = self._cache
        for seq in seqs:
            kept = cache.get(seq)
            if kept is not None:
                cache.move_to_end(seq)
                found[seq] = kept
        missing = [seq for seq in seqs if seq not in found]
        for start in range(0, len(missing), _FETCH_MAX):
            part = _padded(missing[start:start + _FETCH_MAX])
            for row in await self._db.fetch(_rows_sql(len(part)), *part):
                seq = int(row[0])
                found[seq] = StoredFingerprint(row[1], row[2], bytes(row[3]), row[4], row[5],
                                               int(row[6]))
                self._keep(seq, found[seq])
        # A row deleted between the two statements is simply not found.
        return [found[seq] for seq in seqs if seq in found]

    def _keep(self, seq: int, entry: StoredFingerprint) -> None:
        self._cache[seq] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def record(self, entry: NewFingerprint) -> bool:
        """Index a complaint in a transaction of its own (idempotent: a complaint already
        indexed is left as it is). Returns True when it was new. The intake indexes through
        :func:`record_many` in the outbox's group commit instead."""
        new = await self._db.run_transaction(
            lambda tx: record_many(tx, [entry], bands=self._bands is None))
        if self._bands is not None:
            self._bands.put(new)
        self.remember(new)
        return bool(new)

    def remember(self, indexed: Indexed) -> None:
        """Keep fingerprints just committed (by :meth:`record` or the outbox's group commit,
        :meth:`forwarder.outbox.Outbox.on_indexed`): the next complaints' lookups find them
        among their candidates, and this way need not read them back from the store. Kept as
        stored (about 1 KiB each), not as parsed (about 4 KiB): a candidate is parsed when
        it is similar enough to need its places."""
        for seq, entry in indexed:
            self._keep(seq, StoredFingerprint.of(entry.complaint_id, entry.cluster_id,
                                                 entry.fingerprint, entry.region, entry.agency,
                                                 entry.received_us))

    async def count(self) -> int:
        """How many complaints are indexed."""
        row = await self._db.fetchrow("SELECT COUNT(*) FROM fingerprints")
        return int(row[0]) if row else 0


#: Parameters per statement: below SQLite's limit (32,766) and PostgreSQL's (65,535).
_MAX_PARAMS = 30_000


async def record_many(tx: Executor, entries: Sequence[NewFingerprint], *, bands: bool = True
                      ) -> list[tuple[int, NewFingerprint]]:
    """Index ``entries`` inside the caller's transaction (the outbox's group commit, so a
    complaint and its fingerprint are committed together): one multi-row statement per table
    however many entries, instead of a transaction each. Complaints indexed already are left
    as they are (idempotent). Returns the new ones with their ``seq``. ``bands=False`` leaves
    their band rows to the caller (:class:`forwarder.bands.BandWriter`)."""
    # In complaint id order, as the outbox rows: concurrent groups never wait in a cycle.
    unique = sorted({entry.complaint_id: entry for entry in entries}.values(),
                    key=lambda entry: entry.complaint_id)
    if not unique:
        return []
    values = row_placeholders(len(unique), 6)
    rows = await tx.fetch(
        "INSERT INTO fingerprints (complaint_id, cluster_id, received_us, region, agency,"
        f" fingerprint) VALUES {values} ON CONFLICT DO NOTHING RETURNING seq, complaint_id",
        *(value for e in unique for value in (e.complaint_id, e.cluster_id, e.received_us,
                                               e.region, e.agency, e.fingerprint.to_bytes())))
    by_id = {e.complaint_id: e for e in unique}
    new = sorted(((int(seq), by_id[str(cid)]) for seq, cid in rows), key=lambda n: n[0])
    if bands:
        await insert_bands(tx, band_rows(new))
    return new


def band_rows(indexed: Sequence[tuple[int, NewFingerprint]]) -> list[tuple[int, int, int]]:
    """The ``lsh_bands`` rows ``(band_key, received_us, seq)`` of indexed fingerprints."""
    return [(key, entry.received_us, seq) for seq, entry in indexed
            for key in dict.fromkeys(entry.keys)]


async def insert_bands(tx: Executor, rows: Sequence[tuple[int, int, int]]) -> None:
    """Insert band rows (those there already are left as they are), in statements below
    both drivers' parameter limits."""
    per_statement = _MAX_PARAMS // 3
    for start in range(0, len(rows), per_statement):
        chunk = rows[start:start + per_statement]
        values = row_placeholders(len(chunk), 3)
        await tx.execute(f"INSERT INTO lsh_bands (band_key, received_us, seq) VALUES {values}"
                         " ON CONFLICT DO NOTHING", *(v for band in chunk for v in band))
