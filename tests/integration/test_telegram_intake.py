"""The Telegram connector against the real intake (normaliser, SQLite outbox, attachment
store, status service) rather than FakeIntake: what it builds must pass the real rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from connectors.telegram import TelegramConnector
from forwarder.db import open_database
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from forwarder.store import CentralStore
from gateway.attachments import AttachmentStore
from gateway.intake import GatewayIntake
from gateway.status import StatusService
from normalizer.ids import complaint_id
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import wait_for
from tests.integration.test_telegram_emulated import JPEG, make_settings

MiB = 1024 * 1024


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    yield emulator
    await emulator.close()


async def test_conversation_through_the_real_intake(emu: TelegramEmulator,
                                                    tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    try:
        async with Outbox(db) as outbox:
            intake = GatewayIntake(outbox, AttachmentStore(tmp_path / "att", 10 * MiB),
                                   StatusService(CentralStore(db), outbox), ReplyQueue(db))
            photo_id, unique = emu.add_file(JPEG, name="a.jpg")
            connector = TelegramConnector(make_settings(emu), public_url=None)
            await connector.start(intake)
            try:
                first = emu.push_message("Jalan amblas di Jl. Soekarno-Hatta km 5.")
                emu.push_message(media_group_id="g1", photo=[
                    {"file_id": photo_id, "file_unique_id": unique, "width": 10,
                     "height": 10}])
                emu.push_message(location={"latitude": -0.5, "longitude": 117.15})
                emu.push_edit(first["message"], "Jalan amblas parah di Jl. Soekarno-Hatta km 5.")
                emu.push_message("/status " + "X" * 10)
                emu.push_message("")  # an empty text cannot be a complaint: told, not stored

                async def handled() -> bool:
                    return not emu.updates and len(emu.sent) >= 2

                await wait_for(handled, within=20, what="all updates handled")
            finally:
                await connector.stop()
            rows = await db.fetch(
                "SELECT id, native_id, payload FROM outbox ORDER BY created_us")
            cursor = await outbox.load_cursor(f"telegram:{emu.bot_id}:offset")
    finally:
        await db.close()
    chat, mid = first["message"]["chat"]["id"], first["message"]["message_id"]
    root = complaint_id("telegram", emu.username, f"{chat}:{mid}")
    assert [row[0] for row in rows][0] == root
    assert len(rows) == 3  # text (edited), photo, location: an edit is no second complaint
    follow_ups = [orjson.loads(row[2]) for row in rows[1:]]
    assert [c["thread_of"] for c in follow_ups] == [root, root]
    assert follow_ups[0]["attachments"][0]["content_type"] == "image/jpeg"
    assert follow_ups[1]["location"]["lat"] == -0.5
    edited = orjson.loads(rows[0][2])
    assert edited["body"] == "Jalan amblas parah di Jl. Soekarno-Hatta km 5."
    assert [v["body"] for v in edited["revisions"]] == [
        "Jalan amblas di Jl. Soekarno-Hatta km 5.", edited["body"]]
    assert cursor is not None
    assert "tidak ditemukan" in emu.sent[0]["text"]
    assert emu.sent[1]["text"].startswith("Laporan belum dapat kami terima")
