"""The durable near-duplicate index (forwarder/fingerprints.py) on SQLite and PostgreSQL: a
lookup finds the same candidates whether their fingerprints are in memory or read from the
store, within the window, the per-key and the overall bounds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from forwarder.bands import BandWriter
from forwarder.db import Database, open_database
from forwarder.fingerprints import FingerprintIndex, NewFingerprint
from forwarder.outbox import Outbox, now_us
from normalizer.dedup import decide
from normalizer.routing import Router
from normalizer.similarity import fingerprint, index_hashes
from tests.integration.support import wait_for
from tests.integration.test_stores import _complaint

ROUTER = Router.from_files()
LAMP = "Lampu penerangan jalan di Jl. Pahlawan Samarinda mati seminggu, malam sangat gelap."
HOT, RARE = 11, 22  # two index keys


def entry(n: int, keys: list[int], received_us: int) -> NewFingerprint:
    fp = fingerprint(f"{LAMP} RT {n:02d}", ROUTER)
    return NewFingerprint(f"{n:032x}", f"{n:032x}", received_us, None, None, fp, keys)


def described(found: list) -> list[tuple[str, int, bytes]]:  # type: ignore[type-arg]
    return [(c.complaint_id, c.received_us, c.data) for c in found]


async def test_lookups_read_what_another_instance_recorded(db: Database) -> None:
    writer = FingerprintIndex(db, per_key=3, limit=5)
    for n in range(1, 8):  # 7 complaints on the hot key, received at 100..700
        assert await writer.record(entry(n, [HOT], 100 * n))
    assert await writer.record(entry(8, [RARE], 50))  # too old for the window below
    assert await writer.record(entry(9, [RARE, HOT], 650))
    assert not await writer.record(entry(9, [RARE], 650))  # idempotent
    assert await writer.count() == 9

    cold = FingerprintIndex(db, per_key=3, limit=5)  # nothing in memory: read from the store
    tiny = FingerprintIndex(db, per_key=3, limit=5, cache_size=1)  # evicts while reading
    for index in (writer, cold, tiny, cold):
        found = await index.candidates([HOT, RARE, HOT], since_us=60)
        # The hot key's newest 3, the rare key's one inside the window, newest first.
        assert [c.complaint_id for c in found] == [f"{n:032x}" for n in (7, 9, 6)]
        assert found[0].received_us == 700
        assert described(found) == described(await writer.candidates([RARE, HOT], 60))
    assert await cold.candidates([], 0) == []
    assert await cold.candidates([33], 0) == []

    wide = FingerprintIndex(db, per_key=10, limit=5)
    assert [c.received_us for c in await wide.candidates([HOT, RARE], 0)] == \
        [700, 650, 600, 500, 400]  # at most ``limit``, the newest


async def test_the_decision_is_the_same_from_memory_and_from_the_store(db: Database) -> None:
    writer = FingerprintIndex(db)
    query = fingerprint("LAMPU JLN PAHLAWAN SAMARINDA MATI UDH SEMINGGU GELAP", ROUTER)
    keys = index_hashes(query)
    for n in range(1, 20):  # 19 reads, a count that is not a power of two
        await writer.record(entry(n, keys[:2] if n % 2 else keys[-1:], 1000 + n))
    from_memory = decide(query, await writer.candidates(keys, 0))
    from_store = decide(query, await FingerprintIndex(db).candidates(keys, 0))
    assert from_memory.is_duplicate and from_memory == from_store
    assert from_memory.candidates == 19


Stores = tuple[Database, Database]  # the main store, the band file


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    """A SQLite store and its band file, as ``lapor-gateway run`` opens them."""
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    bands_db = await db.sibling("lsh", searched=True)
    yield db, bands_db
    await bands_db.close()
    await db.close()


def indexed_keys(n: int, received_us: int) -> NewFingerprint:
    """A complaint whose keys are its fingerprint's own (as the intake indexes it)."""
    fp = fingerprint(f"{LAMP} RT {n:02d}", ROUTER)
    return NewFingerprint(f"{n:032x}", f"{n:032x}", received_us, None, None, fp,
                          index_hashes(fp))


async def _band_rows(db: Database) -> set[tuple[int, int, int]]:
    return {(int(r[0]), int(r[1]), int(r[2]))
            for r in await db.fetch("SELECT band_key, received_us, seq FROM lsh_bands")}


async def test_band_rows_written_later_are_found_before_and_after(stores: Stores) -> None:
    """SQLite: band rows go to their own file after the fingerprint's commit; a lookup finds a
    complaint from the moment it is recorded, whether its rows are written yet or not."""
    db, bands_db = stores
    now = now_us()
    async with BandWriter(bands_db, db, window_s=86400) as bands:
        index = FingerprintIndex(db, bands=bands)
        first = indexed_keys(1, now - 10)
        assert await index.record(first)
        assert bands.pending(first.keys, 0, 10) == {1: now - 10}  # in memory at once
        found = await FingerprintIndex(db, bands=bands, cache_size=1).candidates(
            first.keys, now - 1000)
        assert [c.complaint_id for c in found] == [first.complaint_id]
        await wait_for(lambda: _idle(bands), within=10, what="band rows written")
        assert bands.pending(first.keys, 0, 10) == {}
        second = indexed_keys(2, now)
        assert await index.record(second)
        # Written or not, both are found, newest first, by an index that has read nothing.
        found = await FingerprintIndex(db, bands=bands).candidates(second.keys, now - 1000)
        assert [c.complaint_id for c in found] == [second.complaint_id, first.complaint_id]
    # Closing waited for the queue: every row is in the band file, none in the main one.
    assert await _band_rows(bands_db) == {(k, e.received_us, seq) for seq, e in
                                          ((1, first), (2, second)) for k in set(e.keys)}
    assert await _band_rows(db) == set()


async def test_band_rows_lost_with_the_process_are_rebuilt_at_start(stores: Stores) -> None:
    """Fingerprints committed whose band rows were never written (the process was killed
    first) are indexed again when the next start opens the band file; those outside the
    near-duplicate window are not."""
    db, bands_db = stores
    now = now_us()
    async with BandWriter(bands_db, db, window_s=3600) as bands:
        assert await FingerprintIndex(db, bands=bands).record(indexed_keys(1, now - 100))
    killed = BandWriter(bands_db, db, window_s=3600)  # never entered: writes nothing
    index = FingerprintIndex(db, bands=killed)
    entries = [indexed_keys(n, now - n) for n in range(2, 6)]
    entries.append(indexed_keys(6, now - 7200 * 1_000_000))  # older than the window
    for entry in entries:
        assert await index.record(entry)
    assert len(await _band_rows(bands_db)) == len(set(indexed_keys(1, 0).keys))

    restarted = BandWriter(bands_db, db, window_s=3600)
    async with restarted:
        pass
    rows = await _band_rows(bands_db)
    assert {seq for _, _, seq in rows} == {1, 2, 3, 4, 5}
    assert len(rows) == sum(len(set(e.keys)) for e in [indexed_keys(1, 0), *entries[:4]])
    found = await FingerprintIndex(db, bands=restarted).candidates(entries[0].keys, 0)
    assert entries[0].complaint_id in {c.complaint_id for c in found}
    assert await restarted.repair() == 0  # nothing left to do


async def _idle(bands: BandWriter) -> bool:
    return bands.unwritten == 0


async def test_unwritten_rows_are_searched_as_the_store_would_per_key(stores: Stores) -> None:
    """In memory, as in the store, a key gives its newest ``per_key`` complaints: a burst on a
    busy key cannot crowd out what another key finds."""
    db, bands_db = stores
    stopped = BandWriter(bands_db, db, window_s=3600)  # never entered: keeps all in memory
    index = FingerprintIndex(db, per_key=3, limit=4, bands=stopped)
    for n in range(1, 11):  # ten on the hot key, received at 100..1000
        assert await index.record(entry(n, [HOT], 100 * n))
    assert await index.record(entry(11, [RARE], 50))
    assert stopped.pending([HOT, RARE], 0, 3) == {10: 1000, 9: 900, 8: 800, 11: 50}
    found = await index.candidates([HOT, RARE], 0)
    assert [c.complaint_id for c in found] == [f"{n:032x}" for n in (10, 9, 8, 11)]
    assert stopped.unwritten == 11


async def test_band_rows_ahead_of_a_restored_store_are_dropped(stores: Stores) -> None:
    """The main file restored from an older backup gives its ``seq`` numbers out again: the
    band rows past its newest fingerprint point at nothing and are deleted at start, so the
    complaints that take those numbers are indexed, not shadowed."""
    db, bands_db = stores
    now = now_us()
    async with BandWriter(bands_db, db, window_s=3600) as bands:
        index = FingerprintIndex(db, bands=bands)
        for n in (1, 2, 3):
            assert await index.record(indexed_keys(n, now - n))
    await db.execute("DELETE FROM fingerprints WHERE seq > 1")  # the restored backup
    async with BandWriter(bands_db, db, window_s=3600) as bands:
        assert {seq for _, _, seq in await _band_rows(bands_db)} == {1}
        index = FingerprintIndex(db, bands=bands)
        assert await index.record(indexed_keys(7, now))  # takes seq 2 again
    rows = await _band_rows(bands_db)
    assert {(k, seq) for k, _, seq in rows} == \
        {(k, 1) for k in indexed_keys(1, 0).keys} | {(k, 2) for k in indexed_keys(7, 0).keys}


class _CountingReads:
    """``db`` for a :class:`FingerprintIndex`, counting the statements that read stored
    fingerprints back (step two of a lookup)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.fingerprint_reads = 0

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        if "FROM fingerprints" in sql:
            self.fingerprint_reads += 1
        return await self.db.fetch(sql, *args)


async def test_complaints_the_outbox_indexed_are_found_without_reading_them_back(
        db: Database) -> None:
    """The outbox's group commit hands what it indexed to the index (``on_indexed``): the next
    lookups find those complaints, their fingerprints whole, without reading them back; an
    index that was not told reads them from the store and finds the same."""
    counting = _CountingReads(db)
    told = FingerprintIndex(cast(Database, counting))
    blind = FingerprintIndex(db)
    async with Outbox(db) as outbox:
        outbox.on_indexed(told.remember)
        for n in range(1, 6):
            text = f"{LAMP} RT {n:02d}"
            complaint = _complaint(f"wamid.{n}", text)
            fp = fingerprint(text, ROUTER)
            await outbox.add(complaint, b"raw", "text/plain", fingerprint=NewFingerprint(
                complaint.id, complaint.id, 1000 + n, None, None, fp, index_hashes(fp)))
    query = fingerprint(f"{LAMP} RT 07", ROUTER)
    keys = index_hashes(query)
    remembered = await told.candidates(keys, 0)
    read = await blind.candidates(keys, 0)
    assert len(remembered) == 5 and counting.fingerprint_reads == 0
    assert described(remembered) == described(read)
    assert [c.fingerprint for c in remembered] == [c.fingerprint for c in read]
    assert decide(query, remembered) == decide(query, read)
