"""The webhook inbox (bodies kept before they are parsed) on both backends, its worker, and a
gateway killed with kept bodies it had not handled yet."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from connectors import inbox_worker
from connectors.inbox_worker import InboxWorker
from errors import StoreUnavailable
from forwarder.db import Database, open_database
from forwarder.inbox import Inbox
from forwarder.outbox import now_us
from tests.emulators.graph import EmulatedGraph, encode, wa_change, wa_message, wa_payload
from tests.integration.support import GatewayProcess, wait_for


async def test_bodies_are_leased_oldest_first_once_each_and_forgotten_when_done(
        db: Database) -> None:
    async with Inbox(db, max_pending=100) as inbox:
        for body in (b"w1", b"w2", b"w3"):
            await inbox.put("whatsapp", body)
        await inbox.put("meta", b"m1")
        assert inbox.pending == 4 and await inbox.depth() == 4
        first = await inbox.lease("whatsapp", 10, 30)
        assert [k.body for k in first] == [b"w1", b"w2", b"w3"]
        assert all(k.received_us <= now_us() for k in first)
        assert await inbox.lease("whatsapp", 10, 30) == []  # held: nobody else gets them
        await inbox.release([first[1].seq])
        again = await inbox.lease("whatsapp", 10, 30)
        assert [k.body for k in again] == [b"w2"]
        await inbox.done([k.seq for k in first])
        assert await inbox.depth() == 1 and inbox.pending == 1
        assert [k.body for k in await inbox.lease("meta", 10, 30)] == [b"m1"]


async def test_a_lease_that_ran_out_is_leased_again(db: Database) -> None:
    async with Inbox(db, max_pending=100) as inbox:
        await inbox.put("whatsapp", b"w1")
        assert len(await inbox.lease("whatsapp", 10, 0)) == 1
        assert [k.body for k in await inbox.lease("whatsapp", 10, 30)] == [b"w1"]


async def test_a_full_inbox_refuses_with_retry_after(db: Database) -> None:
    async with Inbox(db, max_pending=2, retry_after_s=7) as inbox:
        await inbox.put("whatsapp", b"1")
        await inbox.put("whatsapp", b"2")
        with pytest.raises(StoreUnavailable) as refused:
            await inbox.put("whatsapp", b"3")
        assert refused.value.retry_after == 7
        await inbox.done([k.seq for k in await inbox.lease("whatsapp", 1, 30)])
        await inbox.put("whatsapp", b"3")  # room again
    assert [bytes(r[0]) for r in await db.fetch(
        "SELECT body FROM webhook_inbox ORDER BY seq")] == [b"2", b"3"]


async def test_nothing_is_kept_while_the_intake_behind_refuses(db: Database) -> None:
    """The outbox past its bound (Kafka unreachable for long): the inbox refuses too, so
    undelivered work stays bounded."""
    refusing: list[StoreUnavailable] = [StoreUnavailable("outbox full", retry_after=5)]

    async def admission() -> StoreUnavailable | None:
        return refusing[0] if refusing else None

    async with Inbox(db, max_pending=100) as inbox:
        inbox.admission = admission
        with pytest.raises(StoreUnavailable, match="outbox full"):
            await inbox.put("whatsapp", b"1")
        refusing.clear()
        await inbox.put("whatsapp", b"1")
        assert await inbox.depth() == 1


async def test_a_new_sqlite_run_voids_the_leases_of_the_killed_one(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    try:
        async with Inbox(db, max_pending=10) as inbox:
            await inbox.put("whatsapp", b"w1")
            assert len(await inbox.lease("whatsapp", 10, 3600)) == 1
        async with Inbox(db, max_pending=10) as inbox:
            assert [k.body for k in await inbox.lease("whatsapp", 10, 30)] == [b"w1"]
    finally:
        await db.close()


# --------------------------------------------------------------------------- the worker


class Recorder:
    """A handler that records what it handled and fails where it is told to."""

    def __init__(self, *, poison: bytes = b"", unavailable: dict[bytes, int] | None = None
                 ) -> None:
        self.handled: list[bytes] = []
        self.dead: list[tuple[bytes, str]] = []
        self._poison = poison
        self._unavailable = dict(unavailable or {})

    async def handle(self, body: bytes, received_at: datetime) -> None:
        assert received_at.tzinfo is not None
        await asyncio.sleep(0)  # let the other groups interleave
        if body == self._poison:
            raise ValueError("cannot handle this")
        if self._unavailable.get(body, 0) > 0:
            self._unavailable[body] -= 1
            raise StoreUnavailable("store down")
        self.handled.append(body)

    async def dead_letter(self, body: bytes, exc: Exception) -> None:
        self.dead.append((body, type(exc).__name__))


@pytest.fixture
async def sqlite_inbox(tmp_path: Path) -> AsyncIterator[Inbox]:
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    async with Inbox(db, max_pending=1000) as inbox:
        yield inbox
    await db.close()


async def drain_with(inbox: Inbox, recorder: Recorder) -> InboxWorker:
    """Run a worker (order key: the body's first letter) until the inbox is empty."""
    worker = InboxWorker(inbox, "whatsapp", recorder.handle, lambda b: b[:1].decode(),
                         recorder.dead_letter)
    worker.start()

    async def empty() -> bool:
        return await inbox.depth() == 0

    try:
        await wait_for(empty, within=20, what="the inbox drained")
    finally:
        await worker.stop()
    return worker


def by_sender(handled: list[bytes], sender: bytes) -> list[bytes]:
    return [body for body in handled if body.startswith(sender)]


async def test_worker_keeps_each_senders_order_and_dead_letters_a_poison_body(
        sqlite_inbox: Inbox) -> None:
    recorder = Recorder(poison=b"B-poison")
    bodies = [b"A1", b"B1", b"A2", b"B-poison", b"A3", b"C1", b"B2"]
    for body in bodies:
        await sqlite_inbox.put("whatsapp", body)
    worker = await drain_with(sqlite_inbox, recorder)
    assert by_sender(recorder.handled, b"A") == [b"A1", b"A2", b"A3"]
    assert by_sender(recorder.handled, b"B") == [b"B1", b"B2"]  # the poison did not stall B2
    assert recorder.dead == [(b"B-poison", "ValueError")]
    assert worker.handled == 6 and worker.failed == 1


async def test_worker_retries_through_a_store_outage_in_order_losing_nothing(
        sqlite_inbox: Inbox) -> None:
    recorder = Recorder(unavailable={b"A1": 2, b"B2": 1})
    for body in (b"A1", b"A2", b"B1", b"B2", b"B3"):
        await sqlite_inbox.put("whatsapp", body)
    await drain_with(sqlite_inbox, recorder)
    assert by_sender(recorder.handled, b"A") == [b"A1", b"A2"]  # A2 waited for A1
    assert by_sender(recorder.handled, b"B") == [b"B1", b"B2", b"B3"]
    assert recorder.dead == []


async def test_stopping_gives_unhandled_bodies_back(sqlite_inbox: Inbox) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    async def stuck(body: bytes, received_at: datetime) -> None:
        started.set()
        await gate.wait()

    async def never(body: bytes, exc: Exception) -> None:
        raise AssertionError("nothing is dead-lettered")

    await sqlite_inbox.put("whatsapp", b"A1")
    worker = InboxWorker(sqlite_inbox, "whatsapp", stuck, lambda b: "", never)
    worker.start()

    await asyncio.wait_for(started.wait(), 10)
    assert await sqlite_inbox.lease("whatsapp", 10, 30) == []  # the worker holds it
    await worker.stop()
    assert [k.body for k in await sqlite_inbox.lease("whatsapp", 10, 30)] == [b"A1"]


# --------------------------------------------------------------------------- a whole gateway


async def test_bodies_kept_by_a_killed_gateway_become_complaints_after_restart(
        tmp_path: Path, kafka_env: dict[str, str]) -> None:
    """Bodies kept (answered 200) and leased by a process that was then killed: the next run
    handles them at once, each message one complaint in the central store."""
    async with EmulatedGraph() as graph:
        env = {**kafka_env, "LAPOR_CONNECTORS__WHATSAPP__ENABLED": "true",
               "LAPOR_CONNECTORS__WHATSAPP__APP_SECRET": "s",
               "LAPOR_CONNECTORS__WHATSAPP__VERIFY_TOKEN": "v",
               "LAPOR_CONNECTORS__WHATSAPP__ACCESS_TOKEN": graph.token,
               "LAPOR_CONNECTORS__WHATSAPP__PHONE_NUMBER_ID": "106540352242922",
               "LAPOR_CONNECTORS__WHATSAPP__API_BASE": graph.api_base}
        gateway = GatewayProcess(tmp_path / "gw", env)
        await gateway.start()  # creates the store
        gateway.kill9()
        database = tmp_path / "gw" / "lapor.db"
        conn = sqlite3.connect(tmp_path / "gw" / "lapor-inbox.db")  # the inbox's own file
        try:
            for n in range(5):
                sender = f"62812000000{n}"
                body = encode(wa_payload([wa_change("106540352242922", messages=[
                    wa_message(f"wamid.KEPT{n}", sender, text={
                        "body": f"Jembatan kayu nomor {n} di Desa Sukamaju patah."})],
                    contacts=[(sender, "Warga")])]))
                conn.execute("INSERT INTO webhook_inbox (connector, body, received_us,"
                             " lease_until_us) VALUES (?, ?, ?, ?)",
                             ("whatsapp", body, now_us(), now_us() + 3_600_000_000))
            conn.commit()
        finally:
            conn.close()
        await gateway.start()
        try:
            def stored() -> list[str]:
                read = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
                try:
                    return [r[0] for r in read.execute("SELECT native_id FROM complaints")]
                finally:
                    read.close()

            async def all_stored() -> bool:
                return len(await asyncio.to_thread(stored)) == 5

            await wait_for(all_stored, within=30, what="the kept bodies stored")
            assert sorted(await asyncio.to_thread(stored)) == [f"wamid.KEPT{n}"
                                                                for n in range(5)]
        finally:
            assert gateway.terminate() == 0, gateway.log()


@dataclass
class _Kept:
    seq: int
    body: bytes
    received_us: int


class _MemoryInbox:
    """Bodies kept at chosen times (the worker's view of an inbox)."""

    def __init__(self, kept: list[_Kept]) -> None:
        self.kept = kept
        self.puts = 0
        self._arrival = asyncio.Event()

    async def put(self, connector: str, body: bytes) -> None:
        raise AssertionError("the worker never puts")

    async def lease(self, connector: str, limit: int, lease_s: float) -> list[_Kept]:
        leased, self.kept = self.kept[:limit], self.kept[limit:]
        return leased

    async def release(self, seqs: list[int]) -> None:
        pass

    async def done(self, seqs: list[int]) -> None:
        pass

    def arrival(self, connector: str) -> asyncio.Event:
        return self._arrival


async def test_the_further_behind_the_worker_the_more_of_the_loop_it_may_take() -> None:
    """Bodies that arrived just now: the loop's lag target stays at LAG_TARGET_S (webhook
    answers first); bodies waiting for seconds: it grows, up to LAG_MAX_S."""
    now = now_us()
    inbox = _MemoryInbox([_Kept(1, b"fresh", now), _Kept(2, b"3 s", now - 3_000_000),
                          _Kept(3, b"a minute", now - 60_000_000)])
    targets: dict[bytes, float] = {}

    async def handle(body: bytes, received_at: datetime) -> None:
        targets[body] = worker.pacing.target_s

    async def never(body: bytes, exc: Exception) -> None:
        raise AssertionError("nothing is dead-lettered")

    worker = InboxWorker(inbox, "whatsapp", handle, lambda b: "", never, batch=1)
    worker.start()

    async def all_handled() -> bool:
        return len(targets) == 3

    try:
        await wait_for(all_handled, within=10, what="three bodies handled")
    finally:
        await worker.stop()
    assert targets[b"fresh"] == inbox_worker.LAG_TARGET_S
    assert targets[b"3 s"] == pytest.approx(3 * inbox_worker.LAG_TARGET_S, rel=0.05)
    assert targets[b"a minute"] == inbox_worker.LAG_MAX_S
