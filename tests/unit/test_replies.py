"""The reply loop on a real SQLite store with a fake channel: once, retried, given up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from connectors.base import BaseConnector, ReplyTarget
from errors import ChannelRejected, ChannelUnavailable
from forwarder.db import Database, open_database
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from gateway.replies import ReplyLoop, ack_text
from normalizer.ids import complaint_id, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage, Sender


class FakeChannel(BaseConnector):
    """Answers with the scripted failures first, then succeeds; records what it sent."""

    name: ClassVar[str] = "fake"
    replies: bool = True

    def __init__(self, *failures: Exception) -> None:
        super().__init__()
        self.failures = list(failures)
        self.sent: list[tuple[ReplyTarget, str]] = []
        self.attempts = 0

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((target, text))
        return f"msg-{len(self.sent)}"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    yield database
    await database.close()


async def _accepted(db: Database, native_id: str) -> dict[str, str]:
    raw = RawMessage(channel="fake", account="bot", native_id=native_id,
                     received_at=datetime.now(UTC), text="Jalan rusak di depan sekolah.",
                     sender=Sender(channel_user_id="chat-1"), reply_hints={"chat_id": "42"})
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    complaint = normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                          gateway_version="test", raw_ref=None)
    async with Outbox(db) as outbox:
        added = await outbox.add(complaint, b"", "x", raw.reply_hints, "chat-1")
    return {"id": added.complaint_id, "tracking_code": added.tracking_code,
            "status": "received", "channel": "fake"}


async def _until(predicate: object, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_ack_is_sent_once_with_the_tracking_code(db: Database) -> None:
    channel = FakeChannel()
    loop = ReplyLoop(ReplyQueue(db), [channel], "https://lapor.example.go.id")
    receipt = await _accepted(db, "m1")
    await loop.start()
    try:
        await loop.on_delivered([receipt])
        await loop.on_delivered([receipt])  # the same receipt again (republished entry)
        await _until(lambda: loop.sent == 1)
    finally:
        await loop.stop()
    target, text = channel.sent[0]
    assert len(channel.sent) == 1
    assert target.hints == {"chat_id": "42"} and target.address == "chat-1"
    assert receipt["tracking_code"] in text and "STATUS" in text
    assert text == ack_text(receipt["tracking_code"], "https://lapor.example.go.id")
    [state] = await ReplyQueue(db).states(receipt["id"])
    assert (state.state, state.attempts, state.provider_id) == ("sent", 1, "msg-1")


async def test_retriable_errors_are_retried_with_retry_after(db: Database) -> None:
    channel = FakeChannel(ChannelUnavailable("429", retry_after=0.05),
                          ChannelUnavailable("502", retry_after=0.05))
    loop = ReplyLoop(ReplyQueue(db), [channel], None)
    receipt = await _accepted(db, "m2")
    await loop.start()
    try:
        await loop.on_delivered([receipt])
        await _until(lambda: loop.sent == 1)
    finally:
        await loop.stop()
    [state] = await ReplyQueue(db).states(receipt["id"])
    assert (state.state, state.attempts, channel.attempts) == ("sent", 3, 3)


async def test_permanent_error_marks_the_reply_failed(db: Database) -> None:
    channel = FakeChannel(ChannelRejected("403: bot was blocked by the user"))
    loop = ReplyLoop(ReplyQueue(db), [channel], None)
    receipt = await _accepted(db, "m3")
    await loop.start()
    try:
        await loop.on_delivered([receipt])
        await _until(lambda: loop.failed == 1)
    finally:
        await loop.stop()
    [state] = await ReplyQueue(db).states(receipt["id"])
    assert state.state == "failed" and "blocked" in (state.last_error or "")
    assert channel.sent == []


async def test_queued_reply_survives_a_restart(db: Database) -> None:
    receipt = await _accepted(db, "m4")
    silent = ReplyLoop(ReplyQueue(db), [FakeChannel()], None)
    await silent.on_delivered([receipt])  # enqueued, loop never started: the process "dies"
    channel = FakeChannel()
    loop = ReplyLoop(ReplyQueue(db), [channel], None)
    await loop.start()
    try:
        await _until(lambda: loop.sent == 1)
    finally:
        await loop.stop()
    assert channel.sent[0][0].complaint_id == receipt["id"]


async def test_channels_without_replies_owe_nothing(db: Database) -> None:
    receipt = {**(await _accepted(db, "m5")), "channel": "webform"}
    loop = ReplyLoop(ReplyQueue(db), [FakeChannel()], None)
    await loop.on_delivered([receipt])
    assert await ReplyQueue(db).states(receipt["id"]) == []


async def test_follow_ups_get_no_second_acknowledgement(db: Database) -> None:
    receipt = {**(await _accepted(db, "m6")), "thread_of": "0" * 32}
    loop = ReplyLoop(ReplyQueue(db), [FakeChannel()], None)
    await loop.on_delivered([receipt])
    assert await ReplyQueue(db).states(receipt["id"]) == []


async def test_delivery_states_only_move_forward(db: Database) -> None:
    channel = FakeChannel()
    loop = ReplyLoop(ReplyQueue(db), [channel], None)
    receipt = await _accepted(db, "m7")
    await loop.start()
    try:
        await loop.on_delivered([receipt])
        await _until(lambda: loop.sent == 1)
    finally:
        await loop.stop()
    queue = ReplyQueue(db)
    assert await queue.record_delivery("fake", "msg-1", "read", None, None)
    assert not await queue.record_delivery("fake", "msg-1", "delivered", None, None)
    assert not await queue.record_delivery("fake", "msg-1", "sent", None, None)
    assert await queue.record_delivery("fake", "msg-1", "failed", None, "131026")
    assert not await queue.record_delivery("fake", "unknown", "read", None, None)
    [state] = await queue.states(receipt["id"])
    assert state.delivery_state == "failed"


async def test_a_receipt_batch_owes_one_ack_each_in_few_statements(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import forwarder.replies as replies_module

    monkeypatch.setattr(replies_module, "ENQUEUE_CHUNK", 2)  # several chunks of statements
    channel = FakeChannel()
    queue = ReplyQueue(db)
    loop = ReplyLoop(queue, [channel], None)
    receipts = [await _accepted(db, f"b{i}") for i in range(5)]
    # One batch holds a receipt twice (republished), and one was owed by an earlier batch.
    await loop.on_delivered(receipts[:1])
    await loop.on_delivered([*receipts, receipts[3]])
    assert await queue.enqueue_many([(r["id"], "ack", "fake", "x") for r in receipts]) == 0
    jobs = await queue.claim_due(limit=10, lease_s=60)
    assert sorted(j.complaint_id for j in jobs) == sorted(r["id"] for r in receipts)
    assert {j.tracking_code for j in jobs} == {r["tracking_code"] for r in receipts}
    assert all(j.reply_hints == {"chat_id": "42"} and j.account == "bot" for j in jobs)


async def test_a_claimed_reply_of_an_unknown_complaint_fails(db: Database) -> None:
    queue = ReplyQueue(db)
    known = await _accepted(db, "k1")
    assert await queue.enqueue_many([(known["id"], "ack", "fake", "x"),
                                     ("f" * 32, "ack", "fake", "y")]) == 2
    [job] = await queue.claim_due(limit=10, lease_s=60)
    assert job.complaint_id == known["id"]
    [state] = await queue.states("f" * 32)
    assert (state.state, state.last_error) == ("failed", "complaint not in this outbox")
