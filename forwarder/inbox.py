"""The webhook inbox: signed webhook bodies kept durably before they are parsed.

A webhook delivery is answered 200 once its body is committed here. Concurrent deliveries
share one transaction (group commit), so a burst costs one fsync per group and never waits on
parsing, normalisation or near-duplicate lookups. The connector's worker then leases the
oldest bodies (:meth:`Inbox.lease`), handles them as the webhook handler would have, and
deletes them (:meth:`Inbox.done`).

Nothing is lost: a body whose handling was cut short (process killed, store down) keeps its
row and is leased again once its lease has run out, by this instance or another sharing the
database. Nothing is duplicated: handling is idempotent (the complaint id is derived from the
channel's message id, and the outbox keeps one row per id), so handling a body twice answers
the second time with the complaint the first made.

Back-pressure: past ``max_pending`` kept bodies, or while :attr:`Inbox.admission` says the
intake behind it is refusing (the outbox past its own bound: Kafka unreachable for long),
:meth:`Inbox.put` raises ``StoreUnavailable`` (503 with Retry-After; Meta redelivers) instead
of growing without end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from errors import StoreError, StoreUnavailable
from forwarder.db import Database, placeholders, row_placeholders
from forwarder.outbox import next_group, now_us, stop_group_writer

#: Bodies per group commit: one transaction stays short.
MAX_GROUP = 256


@dataclass(frozen=True, slots=True)
class Kept:
    """One kept webhook body."""

    seq: int
    body: bytes
    received_us: int


@dataclass(slots=True)
class _Put:
    connector: str
    body: bytes
    received_us: int
    future: asyncio.Future[None]


class Inbox:
    """The ``webhook_inbox`` table plus its group-commit writer. Use as an async context
    manager."""

    def __init__(self, db: Database, *, max_pending: int, retry_after_s: float = 5.0) -> None:
        self._db = db
        self._max_pending = max_pending
        self._retry_after_s = retry_after_s
        self._queue: asyncio.Queue[_Put] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._pending = 0
        self._arrived: dict[str, asyncio.Event] = {}
        #: Puts asked for since start, refused or not: webhook traffic (the workers pace
        #: themselves by it).
        self.puts = 0
        #: Asked before each put: the refusal to raise while what is behind the inbox is full.
        self.admission: Callable[[], Awaitable[StoreUnavailable | None]] | None = None

    async def __aenter__(self) -> Inbox:
        if self._db.dialect == "sqlite":
            # A SQLite store belongs to one gateway process: leases left by a previous run
            # (killed while handling) are void, so its bodies are handled at once, not after
            # their lease runs out. (PostgreSQL may be shared: there leases run out.)
            await self._db.execute("UPDATE webhook_inbox SET lease_until_us = 0"
                                   " WHERE lease_until_us > 0")
        self._pending = await self.depth()
        self._writer = asyncio.create_task(self._write_loop(), name="inbox-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop_group_writer(self._writer, self._queue, "inbox")

    @property
    def pending(self) -> int:
        """Kept bodies not yet handled (counted locally: exact for one instance)."""
        return self._pending

    async def put(self, connector: str, body: bytes) -> None:
        """Keep ``body`` for ``connector``; return once committed.

        Raises ``StoreUnavailable`` when the inbox is full or the store is down (answer 503:
        the sender redelivers)."""
        self.puts += 1
        if self._writer is None or self._writer.done():
            raise StoreError("inbox writer is not running")
        if self._pending >= self._max_pending:
            raise StoreUnavailable(f"webhook inbox holds {self._pending} unhandled bodies "
                                   f"(bound {self._max_pending})",
                                   retry_after=self._retry_after_s)
        if self.admission is not None and (refusal := await self.admission()) is not None:
            raise refusal
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Put(connector, body, now_us(), future))
        await asyncio.shield(future)

    async def lease(self, connector: str, limit: int, lease_s: float) -> list[Kept]:
        """Lease up to ``limit`` of ``connector``'s oldest bodies not leased by anyone now,
        for ``lease_s`` seconds; oldest first."""
        now = now_us()
        rows = await self._db.fetch(
            "UPDATE webhook_inbox SET lease_until_us = $1"
            " WHERE lease_until_us <= $2 AND seq IN ("
            "  SELECT seq FROM webhook_inbox WHERE connector = $3 AND lease_until_us <= $2"
            "  ORDER BY seq LIMIT $4)"
            " RETURNING seq, body, received_us",
            now + int(lease_s * 1_000_000), now, connector, limit)
        return sorted((Kept(int(r[0]), bytes(r[1]), int(r[2])) for r in rows),
                      key=lambda kept: kept.seq)

    async def release(self, seqs: list[int]) -> None:
        """Give leased bodies back unhandled (a graceful stop): leasable again at once."""
        if seqs:
            await self._db.execute(
                f"UPDATE webhook_inbox SET lease_until_us = 0 WHERE seq IN "
                f"({placeholders(len(seqs))})", *seqs)

    async def done(self, seqs: list[int]) -> None:
        """Forget handled bodies."""
        if seqs:
            await self._db.execute(
                f"DELETE FROM webhook_inbox WHERE seq IN ({placeholders(len(seqs))})", *seqs)
            self._pending = max(0, self._pending - len(seqs))

    async def depth(self) -> int:
        """Kept bodies not yet handled, counted in the store (every instance's)."""
        row = await self._db.fetchrow("SELECT COUNT(*) FROM webhook_inbox")
        return int(row[0]) if row else 0

    def arrival(self, connector: str) -> asyncio.Event:
        """Set whenever a body for ``connector`` is committed (its worker clears and waits)."""
        return self._arrived.setdefault(connector, asyncio.Event())

    async def _write_loop(self) -> None:
        while True:
            batch = await next_group(self._queue, MAX_GROUP)
            values = row_placeholders(len(batch), 4)
            args = [v for put in batch for v in (put.connector, put.body, put.received_us, 0)]
            try:
                await self._db.execute("INSERT INTO webhook_inbox (connector, body,"
                                       f" received_us, lease_until_us) VALUES {values}", *args)
            except Exception as exc:  # noqa: BLE001 - every waiter must hear of the failure
                for put in batch:
                    if not put.future.done():
                        put.future.set_exception(exc)
                continue
            self._pending += len(batch)
            for put in batch:
                if not put.future.done():
                    put.future.set_result(None)
                self.arrival(put.connector).set()
