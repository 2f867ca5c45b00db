"""The outbox and the central store on both backends: SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import forwarder.outbox as outbox_module
from errors import StoreError
from forwarder.db import Database, Executor, open_database
from forwarder.outbox import Outbox, repeats_sql
from forwarder.store import CentralStore
from normalizer.ids import complaint_id, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage
from normalizer.schema import Complaint
from tests.integration.support import PgDatabase


def _complaint(native_id: str, text: str = "Jalan rusak parah di depan pasar.") -> Complaint:
    raw = RawMessage(channel="api", account="partner", native_id=native_id,
                     received_at=datetime(2026, 11, 1, 8, 30, tzinfo=UTC), text=text)
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    return normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                     gateway_version="test", raw_ref=None)


async def test_migrations_apply_once(db: Database) -> None:
    assert await db.migrate() == []
    rows = await db.fetch("SELECT name FROM schema_migrations")
    shipped = resources.files("forwarder").joinpath("migrations", db.dialect).iterdir()
    names = sorted(item.name for item in shipped if item.name.endswith(".sql"))
    assert names[0] == "0001_init.sql" and len(names) >= 7
    assert sorted(r[0] for r in rows) == names


async def test_concurrent_adds_of_one_message_make_one_entry(db: Database) -> None:
    async with Outbox(db) as outbox:
        complaint = _complaint("same")
        results = await asyncio.gather(*(outbox.add(complaint, b"raw", "text/plain")
                                         for _ in range(25)))
    assert len({(r.complaint_id, r.tracking_code) for r in results}) == 1
    assert [r.duplicate for r in results].count(False) == 1
    assert (await db.fetchrow("SELECT count(*) FROM outbox"))[0] == 1  # type: ignore[index]


async def test_one_group_commit_keeps_redeliveries_and_repeats_in_order(db: Database) -> None:
    def add(outbox: Outbox, native_id: str, text: str, sender: str) -> Any:
        return outbox.add(_complaint(native_id, text), b"raw", "text/plain", sender_key=sender,
                          repeat_window_s=3600)

    async with Outbox(db) as outbox:
        earlier = await add(outbox, "old", "Lampu jalan mati.", "s1")
        results = await asyncio.gather(
            add(outbox, "a", "Got depan pasar tersumbat.", "s2"),
            add(outbox, "b", "got depan pasar  TERSUMBAT!", "s2"),  # a repeat of "a"
            add(outbox, "a", "Got depan pasar tersumbat.", "s2"),  # a redelivery of "a"
            add(outbox, "c", "lampu jalan mati", "s1"),  # a repeat of the earlier one
            add(outbox, "d", "Lampu jalan mati.", "s3"),  # same words, another sender
        )
    first, repeat, redelivery, old_repeat, other = results
    assert not first.duplicate and not other.duplicate
    assert (repeat.complaint_id, repeat.tracking_code, repeat.duplicate) == \
        (first.complaint_id, first.tracking_code, True)
    assert (redelivery.complaint_id, redelivery.duplicate) == (first.complaint_id, True)
    assert (old_repeat.complaint_id, old_repeat.duplicate) == (earlier.complaint_id, True)
    rows = await db.fetch("SELECT id, tracking_code FROM outbox ORDER BY id")
    assert sorted(rows) == sorted([(earlier.complaint_id, earlier.tracking_code),
                                   (first.complaint_id, first.tracking_code),
                                   (other.complaint_id, other.tracking_code)])


async def test_run_transaction_commits_the_body_and_returns_what_it_returns(
        db: Database) -> None:
    async def body(tx: Executor) -> list[str]:
        await tx.execute("INSERT INTO cursors (name, value, updated_us) VALUES ($1, $2, 1)",
                         "a", "1")
        await tx.execute("INSERT INTO cursors (name, value, updated_us) VALUES ($1, $2, 1)",
                         "b", "2")
        return [row[0] for row in await tx.fetch("SELECT name FROM cursors ORDER BY name")]

    assert await db.run_transaction(body) == ["a", "b"]
    assert await db.fetch("SELECT name, value FROM cursors ORDER BY name") == \
        [("a", "1"), ("b", "2")]


async def test_run_transaction_rolls_back_when_the_body_fails(db: Database) -> None:
    class Refused(Exception):
        pass

    async def body(tx: Executor) -> None:
        await tx.execute("INSERT INTO cursors (name, value, updated_us) VALUES ('a', '1', 1)")
        raise Refused

    with pytest.raises(Refused):
        await db.run_transaction(body)
    async def duplicate(tx: Executor) -> None:  # a failing statement rolls back the earlier
        await tx.execute("INSERT INTO cursors (name, value, updated_us) VALUES ('b', '1', 1)")
        await tx.execute("INSERT INTO cursors (name, value, updated_us) VALUES ('b', '2', 1)")

    with pytest.raises(StoreError):
        await db.run_transaction(duplicate)
    assert await db.fetch("SELECT name FROM cursors") == []
    await db.execute("INSERT INTO cursors (name, value, updated_us) VALUES ('c', '1', 1)")
    assert await db.fetch("SELECT name FROM cursors") == [("c",)]  # not left in a transaction


async def test_a_transaction_that_loses_a_deadlock_is_run_again(pg: PgDatabase) -> None:
    """Two bodies lock two rows in opposite orders: PostgreSQL aborts one (deadlock detected),
    and the store runs it again instead of failing the caller with a 503."""
    db = await open_database(pg.url, pool_size=4)
    try:
        for name in ("x", "y"):
            await db.execute("INSERT INTO cursors (name, value, updated_us) VALUES ($1, '', 1)",
                             name)
        holding = {"x": asyncio.Event(), "y": asyncio.Event()}
        runs: list[str] = []

        def locking(first: str, then: str) -> Any:
            async def body(tx: Executor) -> str:
                runs.append(first)
                await tx.execute("UPDATE cursors SET value = value || $1 WHERE name = $2",
                                 first, first)
                holding[first].set()
                await holding[then].wait()  # both hold one row: each now waits for the other
                await tx.execute("UPDATE cursors SET value = value || $1 WHERE name = $2",
                                 first, then)
                return first
            return body

        results = await asyncio.wait_for(asyncio.gather(
            db.run_transaction(locking("x", "y")), db.run_transaction(locking("y", "x"))),
            timeout=30)
    finally:
        await db.close()
    assert results == ["x", "y"]
    assert sorted(runs) in (["x", "x", "y"], ["x", "y", "y"])  # the loser ran twice
    values = {name: value for name, value in await pg.fetch("SELECT name, value FROM cursors")}
    assert sorted(values["x"]) == sorted(values["y"]) == ["x", "y"]  # each body's writes once


async def test_two_instances_adding_the_same_messages_in_other_orders(pg: PgDatabase) -> None:
    """A channel redelivering to a second instance: both outboxes take the same messages at
    once, in different orders and groups. Each is one entry, and no caller gets an error."""
    first = await open_database(pg.url, pool_size=4)
    second = await open_database(pg.url, pool_size=4)
    try:
        for round_ in range(10):
            complaints = [_complaint(f"r{round_}-{i}") for i in range(60)]
            async with Outbox(first) as one, Outbox(second) as other:
                results = await asyncio.gather(
                    *(one.add(c, b"raw", "text/plain") for c in complaints),
                    *(other.add(c, b"raw", "text/plain") for c in reversed(complaints)))
            assert sum(not r.duplicate for r in results) == len(complaints)
            assert len({(r.complaint_id, r.tracking_code) for r in results}) == len(complaints)
    finally:
        await first.close()
        await second.close()
    assert (await pg.fetch("SELECT count(*) FROM outbox"))[0][0] == 10 * 60


async def test_a_sqlite_transaction_body_may_await_only_its_statements(tmp_path: Path) -> None:
    """SQLite runs the body on the connection's thread, where there is no event loop to wait
    on: awaiting anything else is refused, and nothing of the body is committed."""
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    try:
        async def body(tx: Executor) -> None:
            await tx.execute("INSERT INTO cursors (name, value, updated_us) VALUES ('a', '1', 1)")
            await asyncio.sleep(0)

        with pytest.raises(StoreError, match="awaited something other"):
            await db.run_transaction(body)
        assert await db.fetch("SELECT name FROM cursors") == []
    finally:
        await db.close()


#: A statement that keeps SQLite's thread busy for a while (counting to three million).
SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000)"
        " SELECT COUNT(*) FROM c")


async def test_a_cancelled_transaction_never_leaves_the_writer_inside_it(tmp_path: Path) -> None:
    """Cancelled twice (the second time while its ROLLBACK waits behind a long statement):
    the ROLLBACK still runs, so the next writes commit instead of joining a transaction
    that nobody will ever finish."""
    url = f"sqlite:///{tmp_path}/lapor.db"
    db = await open_database(url)
    running = asyncio.Event()

    async def abandoned() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO cursors (name, value, updated_us) VALUES ('a', '1', 1)")
            running.set()
            await tx.fetch(SLOW)  # on the thread when the test resumes

    try:
        task = asyncio.create_task(abandoned())
        await running.wait()
        task.cancel()
        await asyncio.sleep(0)  # the task's turn: its ROLLBACK is queued behind SLOW
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await db.execute("INSERT INTO cursors (name, value, updated_us) VALUES ('b', '1', 1)")
        assert await db.run_transaction(
            lambda tx: tx.fetch("SELECT name FROM cursors")) == [("b",)]
    finally:
        await db.close()
    reopened = await open_database(url)
    try:
        assert await reopened.fetch("SELECT name FROM cursors") == [("b",)]
    finally:
        await reopened.close()


async def test_the_repeat_lookup_searches_the_sender_text_index(tmp_path: Path) -> None:
    """Not a walk over every entry of the window: that grew with the outbox."""
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    try:
        sql = repeats_sql(3, 2)
        plan = " ".join(str(row[-1]) for row in await db.fetch(
            f"EXPLAIN QUERY PLAN {sql}", "whatsapp", "acct", 0, "s1", "s2", "s3", "h1", "h2"))
    finally:
        await db.close()
    assert "USING INDEX outbox_sender_text (channel=? AND account=? AND sender_key=? AND " \
        "text_hash=?" in plan, plan


async def test_tracking_code_collision_gets_the_next_code(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = outbox_module.tracking_code
    monkeypatch.setattr(outbox_module, "tracking_code", lambda cid, attempt=0:
                        "AAAAA-AAAAA" if attempt == 0 else real(cid, attempt))
    async with Outbox(db) as outbox:
        first = await outbox.add(_complaint("one"), b"", "x")
        second = await outbox.add(_complaint("two"), b"", "x")
    assert first.tracking_code == "AAAAA-AAAAA"
    assert second.tracking_code == real(second.complaint_id, 1) != first.tracking_code
    row = await db.fetchrow("SELECT payload FROM outbox WHERE id = $1", second.complaint_id)
    assert row is not None
    assert Complaint.from_json(row[0]).tracking_code == second.tracking_code


async def test_claims_lease_and_receipts(db: Database) -> None:
    async with Outbox(db) as outbox:
        ids = [(await outbox.add(_complaint(f"n{i}"), b"", "x")).complaint_id for i in range(5)]
        claimed = await outbox.claim_due(limit=3, lease_s=60)
        assert len(claimed) == 3
        rest = await outbox.claim_due(limit=10, lease_s=60)
        assert {e.complaint_id for e in claimed} | {e.complaint_id for e in rest} == set(ids)
        assert await outbox.claim_due(limit=10, lease_s=60) == []  # all leased
        await outbox.mark_failed([ids[0]], "broker down", retry_in_s=0)
        again = await outbox.claim_due(limit=10, lease_s=0)
        assert [e.complaint_id for e in again] == [ids[0]] and again[0].attempts == 2
        assert await outbox.mark_delivered(ids[:2]) == 2
        assert await outbox.mark_delivered(ids[:2]) == 0
        assert (await outbox.depth())[0] == 3
        assert await outbox.reschedule_pending() == 3
        assert len(await outbox.claim_due(limit=10, lease_s=60)) == 3


async def test_a_claim_records_what_the_last_one_published(db: Database) -> None:
    async with Outbox(db) as outbox:
        ids = [(await outbox.add(_complaint(f"p{i}"), b"", "x")).complaint_id for i in range(4)]
        first = [e.complaint_id for e in await outbox.claim_due(limit=2, lease_s=60)]
        await outbox.mark_failed(first[1:], "broker down", retry_in_s=60)
        second = await outbox.claim_due(limit=10, lease_s=60, published=first)
        assert {e.complaint_id for e in second} == set(ids) - set(first)
    rows = {r[0]: (r[1], r[2]) for r in await db.fetch(
        "SELECT id, published_us, last_error FROM outbox")}
    assert all(rows[i][0] is not None and rows[i][1] is None for i in first)
    assert all(rows[i] == (None, None) for i in set(ids) - set(first))


async def test_new_entries_are_handed_to_the_publisher_already_leased(db: Database) -> None:
    async with Outbox(db) as outbox:
        outbox.hand_over(60)
        complaint = _complaint("h1")
        added = await outbox.add(complaint, b"raw", "x")
        assert outbox.has_fresh
        [entry] = outbox.take_fresh(10)
        assert (entry.complaint_id, entry.attempts) == (added.complaint_id, 1)
        stored = await db.fetchrow("SELECT payload FROM outbox WHERE id = $1", entry.complaint_id)
        assert stored is not None and entry.payload == stored[0].encode()  # what was written
        assert Complaint.from_json(entry.payload).tracking_code == added.tracking_code
        assert await outbox.claim_due(limit=10, lease_s=60) == []  # leased: nobody else's
        assert (await outbox.add(complaint, b"raw", "x")).duplicate
        assert not outbox.has_fresh  # a redelivery is not handed over again
        outbox.hand_over(None)  # the publisher stopped: new entries wait in the table
        later = await outbox.add(_complaint("h2"), b"raw", "x")
        assert not outbox.has_fresh
        assert [e.complaint_id for e in await outbox.claim_due(limit=10, lease_s=60)] == \
            [later.complaint_id]


async def test_entries_past_half_their_lease_are_left_to_the_table(db: Database) -> None:
    """A publisher too slow to take them in time never sends them twice: the claim does."""
    async with Outbox(db) as outbox:
        outbox.hand_over(0.000002)  # half of it is gone by the time they are taken
        added = await outbox.add(_complaint("s1"), b"", "x")
        assert outbox.has_fresh and outbox.take_fresh(10) == []
        assert [e.complaint_id for e in await outbox.claim_due(limit=10, lease_s=60)] == \
            [added.complaint_id]


async def test_entries_a_stalled_publisher_never_took_are_due_at_the_next_claim(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publisher stalled by a broker outage leaves handed-over entries untaken past half
    their lease: they are dropped from the hand-over, and the next claim makes them due and
    takes them, not only once the lease (the receipt timeout) runs out."""
    real_now = outbox_module.now_us
    async with Outbox(db) as outbox:
        outbox.hand_over(60)
        added = await outbox.add(_complaint("st1"), b"", "x")
        monkeypatch.setattr(outbox_module, "now_us", lambda: real_now() + 40_000_000)
        assert outbox.take_fresh(10) == []  # 40 s later: past half of the 60 s lease
        monkeypatch.setattr(outbox_module, "now_us", real_now)
        claimed = await outbox.claim_due(limit=10, lease_s=60)  # the lease still runs
        assert [e.complaint_id for e in claimed] == [added.complaint_id]
        assert await outbox.claim_due(limit=10, lease_s=60) == []  # claimed: leased again


async def test_a_stopping_publisher_releases_what_it_was_handed(db: Database) -> None:
    async with Outbox(db) as outbox:
        outbox.hand_over(60)
        added = await outbox.add(_complaint("r1"), b"", "x")
        outbox.hand_over(None)
        await outbox.release_fresh()  # not taken: due at once, not after the lease
        assert not outbox.has_fresh
        assert [e.complaint_id for e in await outbox.claim_due(limit=10, lease_s=60)] == \
            [added.complaint_id]


async def test_past_the_hand_over_bound_new_entries_wait_in_the_table(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "HANDOVER_MAX", 1)
    async with Outbox(db) as outbox:
        outbox.hand_over(60)
        first = await outbox.add(_complaint("b1"), b"", "x")
        second = await outbox.add(_complaint("b2"), b"", "x")
        assert [e.complaint_id for e in outbox.take_fresh(10)] == [first.complaint_id]
        assert [e.complaint_id for e in await outbox.claim_due(limit=10, lease_s=60)] == \
            [second.complaint_id]


async def test_a_drain_upsert_reports_what_it_wrote_and_what_was_there(db: Database) -> None:
    store = CentralStore(db)
    old, new = _complaint("u1"), _complaint("u2")
    await store.upsert_many([old])
    await db.execute("UPDATE complaints SET status = 'verified' WHERE id = $1", old.id)
    stored = await store.upsert_many([old, new])
    assert (stored[old.id].status, stored[new.id].status) == ("verified", "received")
    assert Complaint.from_json(stored[new.id].payload) == new
    assert stored[new.id].tracking_code == new.tracking_code


async def test_central_store_upsert_is_idempotent(db: Database) -> None:
    store = CentralStore(db)
    first, second = _complaint("s1"), _complaint("s2")
    stored = await store.upsert_many([first, second])
    assert set(stored) == {first.id, second.id}
    again = await store.upsert_many([first])
    assert again[first.id].tracking_code == first.tracking_code
    assert await store.count() == 2
    found = await store.find(first.tracking_code)
    assert found is not None and found.status == "received"
    assert Complaint.from_json(found.payload) == first
    exported = [s.complaint_id async for s in store.iter_all()]
    assert sorted(exported) == sorted([first.id, second.id])


async def test_central_store_refuses_a_colliding_tracking_code(db: Database) -> None:
    store = CentralStore(db)
    first = _complaint("c1")
    impostor = _complaint("c2").model_copy(update={"tracking_code": first.tracking_code})
    stored = await store.upsert_many([first, impostor])
    assert set(stored) == {first.id}


async def test_export_pages_through_many_rows(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    import forwarder.store as store_module

    monkeypatch.setattr(store_module, "EXPORT_PAGE", 7)
    store = CentralStore(db)
    complaints = [_complaint(f"p{i}") for i in range(23)]
    await store.upsert_many(complaints)
    exported = [s.complaint_id async for s in store.iter_all()]
    assert sorted(exported) == sorted(c.id for c in complaints)
    assert len(exported) == 23


async def test_cursors_and_open_conversations(db: Database) -> None:
    async with Outbox(db) as outbox:
        assert await outbox.load_cursor("telegram:bot:offset") is None
        await outbox.save_cursor("telegram:bot:offset", "41")
        await outbox.save_cursor("telegram:bot:offset", "42")
        assert await outbox.load_cursor("telegram:bot:offset") == "42"
        await outbox.save_cursor("media:whatsapp:a#0", "{}")
        await outbox.save_cursor("media:whatsapp:b#0", "{}")
        await outbox.save_cursor("media:meta:c#0", "{}")
        assert set(await outbox.list_cursors("media:whatsapp:")) == {"media:whatsapp:a#0",
                                                                      "media:whatsapp:b#0"}
        await outbox.delete_cursor("media:whatsapp:a#0")
        assert set(await outbox.list_cursors("media:whatsapp:")) == {"media:whatsapp:b#0"}
        first = await outbox.add(_complaint("conv-1"), b"", "x", sender_key="chat-7")
        await outbox.add(_complaint("other"), b"", "x", sender_key="chat-8")
        found = await outbox.recent_from("api", "partner", "chat-7", within_s=60)
        assert found is not None and found.complaint_id == first.complaint_id
        assert await outbox.recent_from("api", "partner", "chat-9", within_s=60) is None
        assert await outbox.recent_from("api", "other", "chat-7", within_s=60) is None
        follow_up = _complaint("conv-2").model_copy(update={"thread_of": first.complaint_id})
        await outbox.add(follow_up, b"", "x", sender_key="chat-7")
        root = await outbox.recent_from("api", "partner", "chat-7", within_s=60)
        assert root is not None
        assert (root.complaint_id, root.tracking_code) == (first.complaint_id,
                                                           first.tracking_code)


async def test_dead_letters_keep_the_raw_bytes_once(db: Database) -> None:
    async with Outbox(db) as outbox:
        raw = b'{"entry": [\xff broken'
        first = await outbox.dead_letter("whatsapp", "1065", "invalid JSON", raw, "text/json")
        again = await outbox.dead_letter("whatsapp", "1065", "invalid JSON", raw, "text/json")
    assert first == again
    rows = await db.fetch("SELECT channel, reason, payload FROM dead_letters")
    assert [(r[0], r[1], bytes(r[2])) for r in rows] == [("whatsapp", "invalid JSON", raw)]
