"""Telegram media that never downloads (the Bot API emulator failing ``getFile``): after
``media_retry_for_s`` the complaint is accepted without it, the citizen is told, and the file
is kept as a dead letter whose replay (once Telegram serves it) adds it to the complaint once."""

from __future__ import annotations

import orjson
import pytest

from connectors.base import MEDIA_REF
from connectors.testing import FakeIntake
from errors import ValidationFailed
from normalizer.ids import complaint_id
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import wait_for
from tests.integration.test_telegram_emulated import (
    JPEG,
    emu,
    polling,
    until_confirmed,
    until_sent,
    until_stored,
)

__all__ = ["emu"]  # the emulator fixture, shared


async def test_a_photo_that_never_downloads_is_a_dead_letter_that_replays_once(
        emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    file_id, unique = emu.add_file(JPEG, name="banjir.jpg")
    emu.fail("getFile", 503, times=1000)
    async with polling(emu, intake, media_retry_for_s=0.5) as connector:
        emu.push_message(caption="Banjir setinggi lutut di Jl. Antasari.", photo=[
            {"file_id": file_id, "file_unique_id": unique, "width": 640, "height": 480}])
        [raw] = await until_stored(intake, 1)
        [notice] = await until_sent(emu, 1)
        await until_confirmed(emu, "update confirmed")  # the queue behind it moves on

        async def kept() -> list[tuple[str, str, str, bytes]]:
            return intake.dead_letters

        [(channel, account, reason, reference)] = await wait_for(
            kept, within=10, what="the media dead letter")
        assert raw.attachments == () and raw.text.startswith("Banjir setinggi lutut")
        assert "tidak dapat kami unduh" in notice["text"]
        assert (channel, account) == ("telegram", raw.account)
        assert reason.startswith("media never downloaded: ChannelUnavailable")
        assert orjson.loads(reference)["file_id"] == file_id
        with pytest.raises(ValidationFailed, match="still not downloadable"):
            await connector.replay(reference, MEDIA_REF)
        emu.recover()
        first = await connector.replay(reference, MEDIA_REF)
        assert first is not None and not first.duplicate
        follow_up = intake.messages[first.complaint_id]
        assert follow_up.native_id == f"{raw.native_id}#media-replay"
        assert follow_up.thread_of == complaint_id("telegram", raw.account, raw.native_id)
        [attachment] = follow_up.attachments
        assert intake.attachments[attachment.sha256 or ""] == JPEG
        second = await connector.replay(reference, MEDIA_REF)
        assert second is not None and second.duplicate and len(intake.messages) == 2
