"""The durable outbox: where an accepted complaint lives until the central store confirms it.

:meth:`Outbox.add` returns only after the row is committed (WAL + ``synchronous=FULL`` on
SQLite, a committed transaction on PostgreSQL). Concurrent adds are grouped into one
transaction (group commit), so a burst costs one fsync, not one per complaint.

The primary key is the deterministic complaint id, so adding the same channel message twice is
a no-op that reports ``duplicate=True``: exact dedup held by the database, not a cache. Rows
stay after delivery for that reason.

Publishing is lease-based: :meth:`claim_due` hands out pending rows whose ``next_attempt_us``
has passed and pushes it forward by the receipt timeout, so an entry with no receipt in time is
claimed (published) again, by this instance or any other sharing the database. While this
instance's publisher runs (:meth:`hand_over`), a new entry is committed already leased to it
and handed over in memory with the JSON just written (:meth:`take_fresh`): no claim
transaction and no second read of the payload.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson

from errors import StoreError, is_retriable
from forwarder.db import Database, Executor, placeholders, row_placeholders
from forwarder.fingerprints import Indexed, NewFingerprint, record_many
from normalizer.ids import tracking_code
from normalizer.revisions import apply_edit, revision
from normalizer.schema import Complaint

T = TypeVar("T")

MAX_GROUP = 256  # complaints per group commit: bounded so one transaction stays short
MARK_CHUNK = 5000  # entries per publish-mark statement (below both drivers' parameter limits)
CODE_ATTEMPTS = 8  # tracking-code collisions to resolve before giving up (50-bit codes)
#: New entries handed to the publisher in memory at most (:meth:`Outbox.hand_over`); past it
#: they are committed due, for a claim to find.
HANDOVER_MAX = 10_000


def now_us() -> int:
    """Wall-clock time in epoch microseconds (the outbox's time unit)."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Added:
    """What :meth:`Outbox.add` did: the complaint's id and code, and whether it was known."""

    complaint_id: str
    tracking_code: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class DueEntry:
    """A claimed outbox entry ready to publish."""

    complaint_id: str
    payload: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox row as the status page sees it."""

    complaint_id: str
    tracking_code: str
    state: str
    payload: bytes


@dataclass(slots=True)
class _Request:
    complaint: Complaint
    raw_payload: bytes
    raw_content_type: str
    reply_hints: str
    sender_key: str | None
    text_hash: str | None
    repeat_window_s: float
    fingerprint: NewFingerprint | None
    future: asyncio.Future[Added]


class Outbox:
    """The outbox table plus a group-commit writer task. Use as an async context manager."""

    def __init__(self, db: Database, *, bands: Callable[[Indexed], None] | None = None) -> None:
        """``bands``: commit new fingerprints without their band rows and hand them, once
        committed, to this (:meth:`forwarder.bands.BandWriter.put`), which writes those
        elsewhere; None: in the same transaction."""
        self._db = db
        self._bands_elsewhere = bands is not None
        #: Called with what each commit indexed, once committed: the band writer first.
        self._indexed_listeners: list[Callable[[Indexed], None]] = [bands] if bands else []
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        #: Set whenever new entries are committed, so the publisher wakes at once.
        self.new_entries = asyncio.Event()
        self._lease_us: int | None = None  # hand new entries over, leased for this long
        #: Handed-over entries, each with the moment it is no longer handed out (half its
        #: lease gone: it is left to the table's claim, so a slow publisher never sends it
        #: twice).
        self._fresh: deque[tuple[int, DueEntry]] = deque()
        #: Handed-over entries dropped unsent (past half their lease: the publisher was
        #: stalled, e.g. by a broker outage): the next claim makes them due at once instead
        #: of leaving them leased to nobody until the lease runs out.
        self._stale: list[str] = []

    def hand_over(self, lease_s: float | None) -> None:
        """Commit new entries leased for ``lease_s`` to this instance's publisher, which takes
        them with :meth:`take_fresh` (``None``: stop; see :meth:`release_fresh` for the
        entries not taken yet)."""
        self._lease_us = None if lease_s is None else int(lease_s * 1_000_000)

    @property
    def has_fresh(self) -> bool:
        """Whether entries wait in :meth:`take_fresh`."""
        return bool(self._fresh)

    def take_fresh(self, limit: int) -> list[DueEntry]:
        """Up to ``limit`` handed-over entries, oldest first: committed, leased to the caller.
        Entries past half their lease are dropped (a publisher that took one so late might
        still be sending it when the lease runs out and the table's claim sends it again):
        the next :meth:`claim_due` makes them due and claims them."""
        fresh, now = self._fresh, now_us()
        taken: list[DueEntry] = []
        while fresh and len(taken) < limit:
            until, entry = fresh.popleft()
            if until >= now:
                taken.append(entry)
            else:
                self._stale.append(entry.complaint_id)
        return taken

    async def release_fresh(self) -> None:
        """Make the entries not taken yet due in the table now (the publisher stops): the next
        start, or another instance, publishes them without waiting for their lease."""
        ids = [entry.complaint_id for _, entry in self._fresh] + self._stale
        self._fresh.clear()
        self._stale = []
        await _set_by_ids(self._db, _DUE_NOW, ids)

    async def __aenter__(self) -> Outbox:
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_group_writer(self._writer, self._queue, "outbox")
        self.hand_over(None)

    async def add(self, complaint: Complaint, raw_payload: bytes, raw_content_type: str,
                  reply_hints: Mapping[str, str] | None = None,
                  sender_key: str | None = None, repeat_window_s: float = 0.0,
                  fingerprint: NewFingerprint | None = None) -> Added:
        """Make ``complaint`` durable; return once committed. Raises :class:`StoreError`.

        ``sender_key`` identifies the citizen on the channel (chat id, phone, address) so that
        :meth:`recent_from` can find an open conversation. With ``repeat_window_s`` > 0, the
        same sender sending the same text again within that window (a new message id: resent,
        pasted twice) is the earlier complaint, reported as a duplicate. ``fingerprint`` is
        indexed for near-duplicate lookups in the same transaction, unless the complaint turns
        out to be a repeat of an earlier one (a redelivery indexes it again: idempotent).
        """
        if self._writer is None or self._writer.done():
            raise StoreError("outbox writer is not running")
        future: asyncio.Future[Added] = asyncio.get_running_loop().create_future()
        hints = orjson.dumps(dict(reply_hints or {})).decode()
        text_hash = None
        if sender_key is not None and repeat_window_s > 0 and complaint.thread_of is None:
            text_hash = _text_hash(complaint.body)
        await self._queue.put(_Request(complaint, raw_payload, raw_content_type, hints,
                                       sender_key, text_hash, repeat_window_s, fingerprint,
                                       future))
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        while True:
            batch = await next_group(self._queue, MAX_GROUP)
            lease_us = self._lease_us if len(self._fresh) < HANDOVER_MAX else None
            try:
                try:
                    results, fresh, indexed = await self._db.run_transaction(
                        partial(self._write_group, batch=batch, lease_us=lease_us))
                except _NeedsOneByOne:
                    results, fresh, indexed = await self._db.run_transaction(
                        partial(self._write_each, batch=batch, lease_us=lease_us))
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
                if len(batch) > 1 and not is_retriable(exc):
                    # One bad request must not fail the others: commit each on its own.
                    for request in batch:
                        await self._write_one(request)
                    continue
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            self._hand(fresh)
            self._index_later(indexed)
            for request, result in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result(result)
            if any(not r.duplicate for r in results):
                self.new_entries.set()

    def _hand(self, fresh: list[DueEntry]) -> None:
        """Hand committed, leased entries over (unless the publisher stopped meanwhile: their
        lease brings them back)."""
        if self._lease_us is not None:
            until = now_us() + self._lease_us // 2
            self._fresh.extend((until, entry) for entry in fresh)

    def on_indexed(self, listener: Callable[[Indexed], None]) -> None:
        """Call ``listener`` with the fingerprints each commit indexed, once committed
        (:meth:`forwarder.fingerprints.FingerprintIndex.remember`)."""
        self._indexed_listeners.append(listener)

    def _index_later(self, indexed: Indexed) -> None:
        if not indexed:
            return
        for listener in self._indexed_listeners:
            listener(indexed)

    async def _write_one(self, request: _Request) -> None:
        try:
            results, _, indexed = await self._db.run_transaction(
                partial(self._write_each, batch=[request], lease_us=None))
            self._index_later(indexed)
            result = results[0]
        except Exception as exc:  # noqa: BLE001 - the waiter hears of it
            if not request.future.done():
                request.future.set_exception(exc)
            return
        if not request.future.done():
            request.future.set_result(result)
        if not result.duplicate:
            self.new_entries.set()

    async def _write_group(self, tx: Executor, batch: list[_Request], lease_us: int | None
                           ) -> tuple[list[Added], list[DueEntry], Indexed]:
        """A group's transaction: the fast path (:meth:`_insert_batch`) and its index rows.
        Returns the results, when ``lease_us`` is given the new entries, committed leased
        for that long, and the fingerprints it indexed."""
        fresh: list[DueEntry] = []
        results = await self._insert_batch(tx, batch, lease_us, fresh)
        return results, fresh, await self._index(tx, batch, results)

    async def _write_each(self, tx: Executor, batch: list[_Request], lease_us: int | None
                          ) -> tuple[list[Added], list[DueEntry], Indexed]:
        """As :meth:`_write_group`, one request at a time (tracking-code collisions
        resolved)."""
        fresh: list[DueEntry] = []
        results = [await self._insert(tx, request, lease_us, fresh) for request in batch]
        return results, fresh, await self._index(tx, batch, results)

    async def _index(self, tx: Executor, batch: list[_Request], results: list[Added]
                     ) -> Indexed:
        """Index the fingerprints of the complaints the group made (or had made already),
        not of repeats that turned out to be an earlier complaint."""
        return await record_many(
            tx, [r.fingerprint for r, added in zip(batch, results, strict=True)
                 if r.fingerprint is not None and added.complaint_id == r.complaint.id],
            bands=not self._bands_elsewhere)

    async def _insert_batch(self, tx: Executor, batch: list[_Request], lease_us: int | None,
                            fresh: list[DueEntry]) -> list[Added]:
        """The whole group in three statements (known ids, recent repeats, one multi-row
        INSERT; one more per extra channel account in the group) instead of two or three per
        complaint: on SQLite each statement is a round
        trip to the connection's thread, which is what bounded the accept rate.

        Same outcome as :meth:`_insert` one by one, in order (a repeat or a redelivery later
        in the same group is a duplicate of the earlier one). When the INSERT skips a row
        (a tracking-code collision) it raises :class:`_NeedsOneByOne`: the transaction rolls
        back and the group is written one by one, where collisions are resolved.
        """
        ids = list(dict.fromkeys(r.complaint.id for r in batch))
        known = {row[0]: row[1] for row in await tx.fetch(
            f"SELECT id, tracking_code FROM outbox WHERE id IN ({placeholders(len(ids), 1)})",
            *ids)}
        now = now_us()
        # (channel, account, sender, text hash) -> earlier complaints, oldest first. One query
        # per (channel, account) in the group.
        repeats: dict[tuple[str, str, str, str], list[tuple[str, str, int]]] = {}
        checks: dict[tuple[str, str], list[_Request]] = {}
        for r in batch:
            if r.text_hash is not None:
                checks.setdefault((r.complaint.channel, r.complaint.audit.account), []).append(r)
        for (channel, account), requests in checks.items():
            senders = list(dict.fromkeys(r.sender_key for r in requests))
            hashes = list(dict.fromkeys(r.text_hash for r in requests))
            oldest = now - int(max(r.repeat_window_s for r in requests) * 1_000_000)
            for row in await tx.fetch(repeats_sql(len(senders), len(hashes)),
                                      channel, account, oldest, *senders, *hashes):
                repeats.setdefault((channel, account, row[2], row[3]), []).append(
                    (row[0], row[1], int(row[4])))
        for earlier in repeats.values():
            earlier.sort(key=lambda repeat: repeat[2])
        results: list[Added | None] = []
        rows: list[tuple[object, ...]] = []
        for request in batch:
            complaint = request.complaint
            if complaint.id in known:
                results.append(Added(complaint.id, known[complaint.id], duplicate=True))
                continue
            key = (complaint.channel, complaint.audit.account, request.sender_key or "",
                   request.text_hash or "")
            if request.text_hash is not None:
                since = now - int(request.repeat_window_s * 1_000_000)
                repeat = next((r for r in repeats.get(key, ()) if r[2] >= since), None)
                if repeat is not None:
                    results.append(Added(repeat[0], repeat[1], duplicate=True))
                    continue
            code = tracking_code(complaint.id)
            if code != complaint.tracking_code:
                complaint = complaint.model_copy(update={"tracking_code": code})
            known[complaint.id] = code
            if request.text_hash is not None:
                repeats.setdefault(key, []).append((complaint.id, code, now))
            payload = complaint.to_json()
            rows.append((complaint.id, code, complaint.channel, complaint.audit.account,
                         complaint.native_id, payload.decode(),
                         request.raw_payload, request.raw_content_type, now,
                         *_leased(now, lease_us), request.reply_hints, request.sender_key,
                         complaint.thread_of, request.text_hash))
            if lease_us is not None:
                fresh.append(DueEntry(complaint.id, payload, 1))
            results.append(None)
        if rows:
            # In id order: two instances inserting the same redelivered messages then wait on
            # each other in one order, never in a cycle (PostgreSQL would abort one: deadlock).
            rows.sort(key=lambda row: str(row[0]))
            width = len(rows[0])
            values = row_placeholders(len(rows), width)
            inserted = await tx.fetch(
                "INSERT INTO outbox (id, tracking_code, channel, account, native_id, payload,"
                " raw_payload, raw_content_type, created_us, next_attempt_us, attempts,"
                f" reply_hints, sender_key, thread_of, text_hash) VALUES {values}"
                " ON CONFLICT DO NOTHING RETURNING id",
                *(value for row in rows for value in row))
            if len(inserted) != len(rows):
                raise _NeedsOneByOne
        return [r if r is not None else Added(b.complaint.id, known[b.complaint.id], False)
                for r, b in zip(results, batch, strict=True)]

    async def _insert(self, tx: Executor, request: _Request, lease_us: int | None,
                      fresh: list[DueEntry]) -> Added:
        complaint = request.complaint
        for attempt in range(CODE_ATTEMPTS):
            existing = await tx.fetchrow(
                "SELECT tracking_code FROM outbox WHERE id = $1", complaint.id
            )
            if existing is not None:
                return Added(complaint.id, existing[0], duplicate=True)
            if request.text_hash is not None:
                repeat = await tx.fetchrow(
                    "SELECT id, tracking_code FROM outbox WHERE channel = $1 AND account = $2"
                    " AND sender_key = $3 AND text_hash = $4 AND created_us >= $5"
                    " ORDER BY created_us LIMIT 1",
                    complaint.channel, complaint.audit.account, request.sender_key,
                    request.text_hash,
                    now_us() - int(request.repeat_window_s * 1_000_000),
                )
                if repeat is not None:
                    return Added(repeat[0], repeat[1], duplicate=True)
            code = tracking_code(complaint.id, attempt)
            if code != complaint.tracking_code:
                complaint = complaint.model_copy(update={"tracking_code": code})
            now = now_us()
            payload = complaint.to_json()
            inserted = await tx.fetchrow(
                "INSERT INTO outbox (id, tracking_code, channel, account, native_id, payload,"
                " raw_payload, raw_content_type, created_us, next_attempt_us, attempts,"
                " reply_hints, sender_key, thread_of, text_hash)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                " ON CONFLICT DO NOTHING RETURNING id",
                complaint.id,
                code,
                complaint.channel,
                complaint.audit.account,
                complaint.native_id,
                payload.decode(),
                request.raw_payload,
                request.raw_content_type,
                now,
                *_leased(now, lease_us),
                request.reply_hints,
                request.sender_key,
                complaint.thread_of,
                request.text_hash,
            )
            if inserted is not None:
                if lease_us is not None:
                    fresh.append(DueEntry(complaint.id, payload, 1))
                return Added(complaint.id, code, duplicate=False)
            # Conflict on the tracking code of another complaint (or on the id, which the
            # next round's SELECT reports as a duplicate): derive the next code.
        raise StoreError(f"could not allot a unique tracking code to {complaint.id}")

    async def claim_due(self, limit: int, lease_s: float,
                        published: Sequence[str] = ()) -> list[DueEntry]:
        """Claim up to ``limit`` pending entries that are due, leasing them for ``lease_s``.

        ``published``: entries Kafka accepted since the last claim, recorded as by
        :meth:`mark_published` in the same transaction (one commit, one trip through the
        shared connection, instead of two per batch).
        """
        claim = _CLAIM_POSTGRESQL if self._db.dialect == "postgresql" else _CLAIM_SQLITE
        stale, self._stale = self._stale, []
        if not published and not stale:
            return await self._claim(self._db, claim, limit, lease_s)
        async def mark_and_claim(tx: Executor) -> list[DueEntry]:
            await self._mark_published(tx, published)
            await _set_by_ids(tx, _DUE_NOW, stale)
            return await self._claim(tx, claim, limit, lease_s)

        try:
            return await self._db.run_transaction(mark_and_claim)
        except BaseException:
            self._stale = stale + self._stale  # the next claim, or their lease, brings them
            raise

    @staticmethod
    async def _claim(db: Executor, claim: str, limit: int, lease_s: float) -> list[DueEntry]:
        now = now_us()
        rows = await db.fetch(claim, now + int(lease_s * 1_000_000), now, limit)
        return [DueEntry(r[0], r[1].encode(), r[2]) for r in rows]

    async def mark_published(self, ids: Sequence[str]) -> None:
        """Record that Kafka accepted these entries (the lease keeps running)."""
        await self._mark_published(self._db, ids)

    @staticmethod
    async def _mark_published(db: Executor, ids: Sequence[str]) -> None:
        await _set_by_ids(db, "published_us = $1, last_error = NULL WHERE", ids)

    async def mark_failed(self, ids: list[str], error: str, retry_in_s: float) -> None:
        """Record a failed publish; the entries become due again after ``retry_in_s``."""
        if ids:
            await self._db.execute(
                f"UPDATE outbox SET next_attempt_us = $1, last_error = $2 WHERE state = 'pending'"
                f" AND id IN ({placeholders(len(ids), 3)})",
                now_us() + int(retry_in_s * 1_000_000),
                error[:500],
                *ids,
            )

    async def mark_delivered(self, ids: list[str],
                             revisions: Mapping[str, int] | None = None) -> int:
        """Record receipts from the central store; returns how many entries changed state.

        ``revisions`` holds the text revision each receipt confirms (0 when absent): a receipt
        for an older revision than the outbox holds leaves the entry pending, so the edited
        text is still published.
        """
        by_revision: dict[int, list[str]] = {}
        for complaint_id in ids:
            by_revision.setdefault((revisions or {}).get(complaint_id, 0), []).append(
                complaint_id)
        changed = 0
        for confirmed, group in by_revision.items():
            rows = await self._db.fetch(
                f"UPDATE outbox SET state = 'delivered', delivered_us = $1"
                f" WHERE state = 'pending' AND revision <= $2"
                f" AND id IN ({placeholders(len(group), 3)}) RETURNING id",
                now_us(),
                confirmed,
                *group,
            )
            changed += len(rows)
        return changed

    async def revise(self, complaint_id: str, edit: Complaint) -> Added | None:
        """Add an edited text to a complaint's history and publish the complaint again.

        Returns None when the outbox has no such complaint (the caller takes the edit as a
        message of its own), else the complaint with ``duplicate=True`` when this edit was
        applied before. Concurrent revisions of one complaint retry on a changed payload.
        """
        for _ in range(CODE_ATTEMPTS):
            row = await self._db.fetchrow(
                "SELECT tracking_code, payload FROM outbox WHERE id = $1", complaint_id
            )
            if row is None:
                return None
            revised = apply_edit(Complaint.from_json(row[1]), edit)
            if revised is None:
                return Added(complaint_id, row[0], duplicate=True)
            now = now_us()
            updated = await self._db.fetchrow(
                "UPDATE outbox SET payload = $1, revision = $2, state = 'pending',"
                " next_attempt_us = $3 WHERE id = $4 AND payload = $5 RETURNING id",
                revised.to_json().decode(), revision(revised), now, complaint_id, row[1],
            )
            if updated is not None:
                self.new_entries.set()
                return Added(complaint_id, row[0], duplicate=False)
        raise StoreError(f"complaint {complaint_id} kept changing while being revised")

    async def reschedule_pending(self) -> int:
        """Make every pending entry due now; returns how many there are."""
        rows = await self._db.fetch(
            "UPDATE outbox SET next_attempt_us = $1 WHERE state = 'pending' RETURNING id",
            now_us(),
        )
        return len(rows)

    async def depth(self) -> tuple[int, float]:
        """Pending entries and the age in seconds of the oldest one."""
        row = await self._db.fetchrow(
            "SELECT COUNT(*), MIN(created_us) FROM outbox WHERE state = 'pending'"
        )
        if row is None or not row[0]:
            return 0, 0.0
        return int(row[0]), max(0.0, (now_us() - int(row[1])) / 1_000_000)

    async def next_due_in(self) -> float | None:
        """Seconds until the next pending entry falls due (None when nothing is pending)."""
        row = await self._db.fetchrow(
            "SELECT MIN(next_attempt_us) FROM outbox WHERE state = 'pending'"
        )
        if row is None or row[0] is None:
            return None
        return max(0.0, (int(row[0]) - now_us()) / 1_000_000)

    async def recent_from(self, channel: str, account: str, sender_key: str,
                          within_s: float) -> Added | None:
        """The complaint of the newest message from this sender on this channel in the last
        ``within_s`` seconds (the root complaint when that message was a follow-up), or None."""
        row = await self._db.fetchrow(
            "SELECT COALESCE(o.thread_of, o.id), COALESCE(root.tracking_code, o.tracking_code)"
            " FROM outbox o LEFT JOIN outbox root ON root.id = o.thread_of"
            " WHERE o.channel = $1 AND o.account = $2 AND o.sender_key = $3"
            " AND o.created_us >= $4 ORDER BY o.created_us DESC LIMIT 1",
            channel, account, sender_key, now_us() - int(within_s * 1_000_000),
        )
        return Added(row[0], row[1], duplicate=True) if row else None

    async def dead_letter(self, channel: str, account: str, reason: str, payload: bytes,
                          content_type: str, source: str = "connector") -> str:
        """Keep an inbound message that cannot become a complaint; returns its id. The same
        bytes from the same channel are one dead letter, however often they are redelivered.
        ``source`` says who gave up on it: ``connector`` (re-parsed by that connector on
        replay) or ``sink`` (a record the central store refused; re-validated on replay)."""
        digest = hashlib.sha256(b"%s\x00%s\x00%s" % (channel.encode(), account.encode(),
                                                       payload)).hexdigest()[:32]
        await self._db.execute(
            "INSERT INTO dead_letters (id, channel, account, reason, payload, content_type,"
            " created_us, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT DO NOTHING",
            digest, channel, account, reason[:1000], payload, content_type, now_us(), source,
        )
        return digest

    async def dead_letters(self, limit: int) -> list[dict[str, object]]:
        """The newest dead letters, without their payloads."""
        rows = await self._db.fetch(
            f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters ORDER BY created_us DESC"
            " LIMIT $1", limit,
        )
        return [_dead_letter_json(r) for r in rows]

    async def dead_letter_entry(self, letter_id: str) -> tuple[dict[str, object], bytes] | None:
        """One dead letter (as listed) and its raw payload, or None."""
        row = await self._db.fetchrow(
            f"SELECT {_DEAD_LETTER_COLUMNS}, payload FROM dead_letters WHERE id = $1", letter_id,
        )
        return (_dead_letter_json(row), bytes(row[-1])) if row else None

    async def mark_replayed(self, letter_id: str, result: str) -> None:
        """Record a replay's outcome (``accepted …``, ``duplicate …``, ``failed: …``)."""
        await self._db.execute(
            "UPDATE dead_letters SET replayed_us = $1, replay_result = $2,"
            " replay_count = replay_count + 1 WHERE id = $3",
            now_us(), result[:500], letter_id,
        )

    async def dead_letter_count(self) -> int:
        """How many dead letters were never replayed successfully."""
        row = await self._db.fetchrow(
            "SELECT COUNT(*) FROM dead_letters WHERE replay_result IS NULL"
            " OR replay_result LIKE 'failed%'"
        )
        return int(row[0]) if row else 0

    async def load_cursor(self, name: str) -> str | None:
        """A pull connector's saved source position."""
        row = await self._db.fetchrow("SELECT value FROM cursors WHERE name = $1", name)
        return str(row[0]) if row else None

    async def save_cursor(self, name: str, value: str) -> None:
        """Save a pull connector's source position (call only once what precedes is durable)."""
        await self._db.execute(
            "INSERT INTO cursors (name, value, updated_us) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value,"
            " updated_us = EXCLUDED.updated_us",
            name, value, now_us(),
        )

    async def list_cursors(self, prefix: str) -> dict[str, str]:
        """Saved cursors whose name starts with ``prefix``."""
        rows = await self._db.fetch(
            "SELECT name, value FROM cursors WHERE substr(name, 1, $1) = $2",
            len(prefix), prefix,
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def delete_cursor(self, name: str) -> None:
        """Forget a cursor."""
        await self._db.execute("DELETE FROM cursors WHERE name = $1", name)

    async def find(self, code: str) -> OutboxEntry | None:
        """The outbox entry with this tracking code, if any."""
        row = await self._db.fetchrow(
            "SELECT id, tracking_code, state, payload FROM outbox WHERE tracking_code = $1", code
        )
        return OutboxEntry(row[0], row[1], row[2], row[3].encode()) if row else None


    async def reporter(self, code: str) -> Reporter | None:
        """Who sent the complaint with this tracking code, and when (for a withdrawal)."""
        row = await self._db.fetchrow(
            "SELECT id, tracking_code, channel, account, sender_key, created_us FROM outbox"
            " WHERE tracking_code = $1", code,
        )
        return Reporter(row[0], row[1], row[2], row[3], row[4], int(row[5])) if row else None


@dataclass(frozen=True, slots=True)
class Reporter:
    """The channel identity a complaint came from."""

    complaint_id: str
    tracking_code: str
    channel: str
    account: str
    sender_key: str | None
    created_us: int


_DEAD_LETTER_COLUMNS = ("id, channel, account, reason, content_type, created_us, replayed_us,"
                        " length(payload), source, replay_result, replay_count")


def _dead_letter_json(row: tuple[object, ...]) -> dict[str, object]:
    keys = ("id", "channel", "account", "reason", "content_type", "created_us", "replayed_us",
            "size", "source", "replay_result", "replay_count")
    return dict(zip(keys, row[:len(keys)], strict=True))


#: Claim the oldest due entries: ``$1`` the lease's end, ``$2`` now, ``$3`` how many. SQLite has
#: one writer, so the statement is atomic as it is.
_CLAIM_SQLITE = (
    "UPDATE outbox SET next_attempt_us = $1, attempts = attempts + 1"
    " WHERE state = 'pending' AND next_attempt_us <= $2 AND id IN ("
    "  SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_us <= $2"
    "  ORDER BY next_attempt_us LIMIT $3)"
    " RETURNING id, payload, attempts")
#: On PostgreSQL the due rows are picked (and locked; rows another transaction holds are
#: skipped) once and joined by primary key: the form above made the outer UPDATE scan every
#: due row again, about 2.5 s per claim with a backlog of 30,000 (the drain's bottleneck).
_CLAIM_POSTGRESQL = (
    "UPDATE outbox o SET next_attempt_us = $1, attempts = o.attempts + 1"
    " FROM (SELECT id FROM outbox WHERE state = 'pending' AND next_attempt_us <= $2"
    "  ORDER BY next_attempt_us LIMIT $3 FOR UPDATE SKIP LOCKED) due"
    " WHERE o.id = due.id"
    " RETURNING o.id, o.payload, o.attempts")


#: :func:`_set_by_ids`: entries not sent yet become due at once.
_DUE_NOW = "next_attempt_us = $1 WHERE state = 'pending' AND"


async def _set_by_ids(db: Executor, assignment: str, ids: Sequence[str]) -> None:
    """``UPDATE outbox SET <assignment> id IN (ids)`` with ``$1`` the time now, in chunks of
    ``MARK_CHUNK`` (below both drivers' parameter limits)."""
    for start in range(0, len(ids), MARK_CHUNK):
        part = ids[start:start + MARK_CHUNK]
        await db.execute(f"UPDATE outbox SET {assignment} id IN ({placeholders(len(part), 2)})",
                         now_us(), *part)


def _leased(now: int, lease_us: int | None) -> tuple[int, int]:
    """``next_attempt_us`` and ``attempts`` of a new entry: due now, or leased to this
    instance's publisher for ``lease_us`` (handed over: counted as its first attempt)."""
    return (now, 0) if lease_us is None else (now + lease_us, 1)


def repeats_sql(senders: int, hashes: int) -> str:
    """The earlier complaints of a group's senders with a group's texts, within the window
    (``$1`` channel, ``$2`` account, ``$3`` oldest ``created_us``, then the senders, then the
    text hashes). An index search on outbox_sender_text; sorted by the caller, since an ORDER
    BY created_us made SQLite walk the (channel, created_us) index over the whole window
    instead (8.8 ms against 0.4 ms a group with 6,000 entries, and growing with the outbox)."""
    return ("SELECT id, tracking_code, sender_key, text_hash, created_us FROM outbox"
            " WHERE channel = $1 AND account = $2 AND created_us >= $3"
            f" AND sender_key IN ({placeholders(senders, 4)})"
            f" AND text_hash IN ({placeholders(hashes, 4 + senders)})")


class _NeedsOneByOne(Exception):
    """A group cannot take the fast path (a tracking-code collision): write it one by one."""


async def next_group(queue: asyncio.Queue[T], limit: int) -> list[T]:
    """A group-commit writer's next group: wait for one request, then take every request
    already waiting, up to ``limit``."""
    group = [await queue.get()]
    while len(group) < limit and not queue.empty():
        group.append(queue.get_nowait())
    return group


async def stop_group_writer(writer: asyncio.Task[None] | None,
                            queue: asyncio.Queue[Any], name: str) -> None:
    """Stop a group-commit writer task; every request still queued (each with a ``future``)
    fails with ``StoreError`` instead of waiting for ever."""
    if writer is not None:
        writer.cancel()
        try:
            await writer
        except asyncio.CancelledError:
            pass
    while not queue.empty():
        request = queue.get_nowait()
        if not request.future.done():
            request.future.set_exception(StoreError(f"{name} closed"))




def _text_hash(body: str) -> str:
    """The complaint text as compared for repeats: case, spacing and punctuation ignored."""
    words = "".join(c if c.isalnum() else " " for c in body.casefold()).split()
    return hashlib.sha256(" ".join(words).encode()).hexdigest()[:32]
