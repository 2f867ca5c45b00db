"""LSH band rows written after their fingerprint's commit, on a SQLite file of their own.

Each complaint has about 42 band rows (:func:`normalizer.similarity.index_hashes`) with random
keys. Inserted in the outbox's group commit, each dirtied a page of its own: 29 % of the
SQLite writer's time in an inbox drain at about 300 complaints/s (py-spy), on the one thread
every complaint waits for. Here they go to ``<stem>-lsh.db`` (:meth:`Database.sibling`), whose
own writer thread commits them in groups as big as the backlog, beside the outbox's writer.

Lookups miss nothing meanwhile: a complaint's keys stay in memory (:meth:`BandWriter.pending`)
from its fingerprint's commit until its band rows are committed, and
:meth:`forwarder.fingerprints.FingerprintIndex.candidates` searches both (memory first, then
the store, so a group committed in between is found in one or the other).

Nothing is lost: the band rows are an index derived from the ``fingerprints`` table. Groups
are committed in the order their fingerprints were (ascending ``seq``), so the band rows always
cover every fingerprint up to the newest ``seq`` they hold; what a killed process or a store
error left unwritten is rebuilt at the next start (:meth:`BandWriter.repair`) from the
fingerprints after it, within the near-duplicate window.

PostgreSQL keeps the band rows in the group commit: its row locks let writers work side by
side, and every instance must see every other's rows at once.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Sequence
from functools import partial

from errors import is_retriable
from forwarder.db import Database, Row
from forwarder.fingerprints import Indexed, NewFingerprint, band_rows, insert_bands
from forwarder.outbox import now_us
from normalizer.similarity import Fingerprint, index_hashes

log = logging.getLogger(__name__)

RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # waits after consecutive failed writes
REPAIR_CHUNK = 2000  # fingerprints re-indexed per transaction at start
STOP_WAIT_S = 5.0  # how long closing waits for the rows still queued (the rest: repair)
#: Complaints whose band rows may wait in memory (about 6 KiB each): past it new complaints
#: are refused with 503 + Retry-After, as past the outbox's bound, until the file takes rows
#: again.
MAX_UNWRITTEN = 20_000


class BandWriter:
    """``async with BandWriter(bands_db, fingerprints_db, window_s):`` repairs, then writes
    what :meth:`put` hands over until closed."""

    def __init__(self, db: Database, fingerprints: Database, window_s: float) -> None:
        self.db = db
        self._fingerprints = fingerprints
        self._window_s = window_s
        self._queue: list[tuple[int, NewFingerprint]] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        #: band key -> ``seq`` -> ``received_us`` of the complaints handed over, not yet
        #: written.
        self._pending: dict[int, dict[int, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._unwritten = 0

    async def __aenter__(self) -> BandWriter:
        await self.repair()
        self._task = asyncio.create_task(self._write_loop(), name="lsh-bands-writer")
        self._task.add_done_callback(_report_end)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), STOP_WAIT_S)
        except TimeoutError:
            log.warning("lsh bands: %d complaints' rows not written at stop; the next start "
                        "rebuilds them", self._unwritten)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    @property
    def unwritten(self) -> int:
        """Complaints handed over whose band rows are not committed yet."""
        return self._unwritten

    @property
    def full(self) -> bool:
        """Whether new complaints must wait: :data:`MAX_UNWRITTEN` are unwritten (the band
        file refuses writes, or its writer stopped)."""
        return self._unwritten >= MAX_UNWRITTEN

    def put(self, indexed: Indexed) -> None:
        """Committed fingerprints (``seq``, entry): searchable at once, written soon."""
        if not indexed:
            return
        for seq, entry in indexed:
            for key in dict.fromkeys(entry.keys):
                self._pending.setdefault(key, {})[seq] = entry.received_us
        self._queue.extend(indexed)
        self._unwritten += len(indexed)
        self._idle.clear()
        self._ready.set()

    def pending(self, keys: Sequence[int], since_us: int, per_key: int) -> dict[int, int]:
        """``seq`` -> ``received_us`` of the complaints handed over and not yet written that
        share one of ``keys`` and were received at or after ``since_us``: each key's newest
        ``per_key``, as the store's lookup reads them (so a busy key in a burst does not push
        out what another key finds)."""
        found: dict[int, int] = {}
        if self._pending:
            for key in keys:
                unwritten = self._pending.get(key)
                if not unwritten:
                    continue
                recent = [(received_us, seq) for seq, received_us in unwritten.items()
                          if received_us >= since_us]
                if len(recent) > per_key:
                    recent = heapq.nlargest(per_key, recent)
                found.update((seq, received_us) for received_us, seq in recent)
        return found

    async def _write_loop(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            group, self._queue = self._queue, []
            failures = 0
            while True:
                try:
                    await self.db.run_transaction(partial(insert_bands, rows=band_rows(group)))
                    break
                except Exception as exc:  # noqa: BLE001 - searchable in memory meanwhile
                    failures += 1
                    delay = RETRY_S[min(failures, len(RETRY_S)) - 1]
                    level = logging.WARNING if is_retriable(exc) else logging.ERROR
                    log.log(level, "lsh bands: writing %d complaints' rows failed (%s: %s); "
                            "%d unwritten; retry in %.1f s", len(group), type(exc).__name__,
                            exc, self._unwritten, delay)
                    await asyncio.sleep(delay)
            self._forget(group)
            self._unwritten -= len(group)
            if not self._queue:
                self._idle.set()

    def _forget(self, written: Indexed) -> None:
        for seq, entry in written:
            for key in dict.fromkeys(entry.keys):
                unwritten = self._pending.get(key)
                if unwritten is None:
                    continue
                unwritten.pop(seq, None)
                if not unwritten:
                    del self._pending[key]

    async def repair(self) -> int:
        """Write the band rows of the fingerprints after the newest ``seq`` indexed (received
        within the window); returns how many complaints that was.

        Rows past the newest fingerprint (the main file was restored from a backup, and its
        ``seq`` numbers will be given out again) point at nothing yet: they are deleted first.
        Band rows left in the fingerprints' own file by an earlier version are deleted too."""
        if self._fingerprints is not self.db:
            await self._fingerprints.execute("DELETE FROM lsh_bands")
        newest = await self._fingerprints.fetchrow("SELECT MAX(seq) FROM fingerprints")
        newest_seq = _seq(newest)
        await self.db.execute("DELETE FROM lsh_bands WHERE seq > $1", newest_seq)
        last = _seq(await self.db.fetchrow("SELECT MAX(seq) FROM lsh_bands"))
        since_us = now_us() - int(self._window_s * 1_000_000)
        if newest_seq > last:
            log.info("lsh bands: indexing the fingerprints after seq %d (up to %d) received "
                     "within the window", last, newest_seq)
        repaired = 0
        while True:
            rows = await self._fingerprints.fetch(
                "SELECT seq, received_us, fingerprint FROM fingerprints WHERE seq > $1"
                " AND received_us >= $2 ORDER BY seq LIMIT $3", last, since_us, REPAIR_CHUNK)
            if not rows:
                break
            group = await asyncio.to_thread(_entries, rows)  # CPU: off the event loop
            await self.db.run_transaction(partial(insert_bands, rows=band_rows(group)))
            repaired += len(group)
            last = group[-1][0]
        if repaired:
            log.warning("lsh bands: rebuilt the rows of %d complaints (not written before the "
                        "last stop)", repaired)
        return repaired


def _seq(row: Row | None) -> int:
    """``MAX(seq)`` as read (0 for an empty table)."""
    return int(row[0]) if row is not None and row[0] is not None else 0


def _report_end(task: asyncio.Task[None]) -> None:
    """The writer loop only ends when cancelled; anything else is a bug: say so loudly (the
    rows stay in memory, :attr:`BandWriter.full` refuses complaints in the end)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("lsh bands: the writer stopped: %r", task.exception())


def _entries(rows: list[Row]) -> list[tuple[int, NewFingerprint]]:
    """What band rows need of stored fingerprints ``(seq, received_us, fingerprint)``: their
    keys and when they were received."""
    entries = []
    for seq, received_us, data in rows:
        fingerprint = Fingerprint.from_bytes(bytes(data))
        entries.append((int(seq), NewFingerprint("", "", int(received_us), None, None,
                                                 fingerprint, index_hashes(fingerprint))))
    return entries
