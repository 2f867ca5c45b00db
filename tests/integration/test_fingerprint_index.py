"""The durable near-duplicate index (forwarder/fingerprints.py) on SQLite and PostgreSQL: a
lookup finds the same candidates whether their fingerprints are in memory or read from the
store, within the window, the per-key and the overall bounds."""

from __future__ import annotations

from forwarder.db import Database
from forwarder.fingerprints import FingerprintIndex, NewFingerprint
from normalizer.dedup import decide
from normalizer.routing import Router
from normalizer.similarity import fingerprint, index_hashes

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
