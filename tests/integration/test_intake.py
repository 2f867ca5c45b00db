"""The real intake on SQLite: repeats by the same sender, and quoted tracking codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from forwarder.db import Database, open_database
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from forwarder.store import CentralStore
from gateway.attachments import AttachmentStore
from gateway.intake import GatewayIntake
from gateway.status import StatusService
from normalizer.raw import RawMessage, Sender


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[tuple[GatewayIntake, Database]]:
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    async with Outbox(db) as outbox:
        yield GatewayIntake(outbox, AttachmentStore(tmp_path / "att", 1024 * 1024),
                            StatusService(CentralStore(db), outbox), ReplyQueue(db),
                            repeat_window_s=3600), db
    await db.close()


def _message(native_id: str, text: str, sender: str = "chat-1") -> RawMessage:
    return RawMessage(channel="telegram", account="bot", native_id=native_id,
                      received_at=datetime.now(UTC), text=text,
                      sender=Sender(channel_user_id=sender))


async def test_same_sender_same_text_is_one_complaint(
        intake: tuple[GatewayIntake, Database]) -> None:
    gateway, db = intake
    first = await gateway.submit(_message("1:1", "Got depan pasar tersumbat, air meluap."))
    again = await gateway.submit(_message("1:2", "got depan pasar  TERSUMBAT. Air meluap!"))
    other = await gateway.submit(_message("2:1", "Got depan pasar tersumbat, air meluap.",
                                          sender="chat-2"))
    changed = await gateway.submit(_message("1:3", "Got depan pasar masih tersumbat hari ini."))
    assert (again.complaint_id, again.duplicate) == (first.complaint_id, True)
    assert not other.duplicate and other.complaint_id != first.complaint_id
    assert not changed.duplicate
    assert (await db.fetchrow("SELECT count(*) FROM outbox"))[0] == 3  # type: ignore[index]


async def test_quoting_a_tracking_code_makes_a_follow_up(
        intake: tuple[GatewayIntake, Database]) -> None:
    gateway, db = intake
    first = await gateway.submit(_message("1:1", "Lampu jalan di gang Mawar mati."))
    code = first.tracking_code.lower()
    follow = await gateway.submit(_message(
        "9:1", f"Tambahan untuk laporan {code}: sekarang dua lampu mati.", sender="chat-9"))
    unrelated = await gateway.submit(_message(
        "9:2", "Kode voucher ABCDE-FGHJK tidak bisa dipakai di loket.", sender="chat-9"))
    rows = {r[0]: orjson.loads(r[1]) for r in await db.fetch("SELECT id, payload FROM outbox")}
    assert rows[follow.complaint_id]["thread_of"] == first.complaint_id
    assert rows[unrelated.complaint_id]["thread_of"] is None
    assert rows[first.complaint_id]["thread_of"] is None
