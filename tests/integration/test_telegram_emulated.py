"""The Telegram connector over real HTTP: the Bot API emulator, PTB, and (webhook mode) an
aiohttp server with the connector's routes, all on 127.0.0.1. FakeIntake stands in for the
durable outbox; every wait is on a condition with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from config.telegram import TelegramSettings
from connectors.base import ConnectorState, IntakeResult, RawMessage, ReplyTarget
from connectors.telegram import ROUTE, SECRET_HEADER, TelegramConnector
from connectors.testing import FakeIntake
from errors import ChannelRejected, ChannelUnavailable
from forwarder.broker import free_port
from normalizer.ids import complaint_id
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import PNG, wait_for

SECRET = "webhook-Secret_123"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200
PDF = b"%PDF-1.4\n" + b"0" * 100


class RecordingIntake(FakeIntake):
    """FakeIntake that notes, at each cursor save, which updates were already stored."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[tuple[str, set[str]]] = []

    async def save_cursor(self, name: str, value: str) -> None:
        self.saves.append((value, {raw.native_id for raw in self.messages.values()}))
        await super().save_cursor(name, value)


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    yield emulator
    await emulator.close()


def make_settings(emu: TelegramEmulator, **overrides: Any) -> TelegramSettings:
    values: dict[str, Any] = dict(
        enabled=True, token=emu.token, mode="polling", secret_token=SECRET, api_base=emu.url,
        poll_timeout_s=1, request_timeout_s=5, send_interval_s=0, chat_send_interval_s=0,
        conversation_window_s=60, drain_timeout_s=5,
    )
    values.update(overrides)
    return TelegramSettings(**values)


@asynccontextmanager
async def polling(emu: TelegramEmulator, intake: FakeIntake,
                  **overrides: Any) -> AsyncIterator[TelegramConnector]:
    connector = TelegramConnector(make_settings(emu, **overrides), public_url=None)
    await connector.start(intake)
    try:
        yield connector
    finally:
        await connector.stop()


@asynccontextmanager
async def webhook(emu: TelegramEmulator, intake: FakeIntake
                  ) -> AsyncIterator[tuple[TelegramConnector, str]]:
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    connector = TelegramConnector(make_settings(emu, mode="webhook"), public_url=public_url)
    app = web.Application()
    app.router.add_routes(connector.routes())
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    await connector.start(intake)
    try:
        yield connector, public_url
    finally:
        await connector.stop()
        await server.close()


def stored(intake: FakeIntake) -> list[RawMessage]:
    return list(intake.messages.values())


async def until_confirmed(emu: TelegramEmulator, what: str) -> None:
    """Wait until Telegram holds no unconfirmed update (all handled and acknowledged)."""

    async def confirmed() -> bool:
        return not emu.updates

    await wait_for(confirmed, within=20, what=what)


async def until_stored(intake: FakeIntake, count: int) -> list[RawMessage]:
    async def enough() -> list[RawMessage]:
        messages = stored(intake)
        return messages if len(messages) >= count else []

    return await wait_for(enough, within=20, what=f"{count} stored message(s)")


async def until_sent(emu: TelegramEmulator, count: int) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]]:
        return emu.sent if len(emu.sent) >= count else []

    return await wait_for(enough, within=20, what=f"{count} message(s) sent by the bot")


# --------------------------------------------------------------------------- polling


async def test_polling_text_becomes_a_complaint_and_the_offset_follows(
        emu: TelegramEmulator) -> None:
    intake = RecordingIntake()
    async with polling(emu, intake) as connector:
        update = emu.push_message("Jalan berlubang di depan SDN 003 Samarinda sejak sebulan.")
        [raw] = await until_stored(intake, 1)
        await until_confirmed(emu, "the update confirmed")
        assert connector.health().state == ConnectorState.RUNNING
    message = update["message"]
    assert raw.channel == "telegram" and raw.connector == "telegram"
    assert raw.account == emu.username
    assert raw.native_id == f"{message['chat']['id']}:{message['message_id']}"
    assert raw.text.startswith("Jalan berlubang")
    assert raw.sender.channel_user_id == str(message["from"]["id"])
    assert raw.sender.handle == "@siti_warga" and raw.sender.name == "Siti Rahma"
    assert raw.reply_hints == {"chat_id": str(message["chat"]["id"]),
                               "message_id": str(message["message_id"])}
    assert raw.raw_content_type == "application/json"
    assert orjson.loads(raw.raw_payload)["update_id"] == update["update_id"]
    assert raw.thread_of is None
    cursor = orjson.loads(intake.cursors[f"telegram:{emu.bot_id}:offset"])
    assert cursor["offset"] == update["update_id"] + 1
    methods = [name for name, _ in emu.calls]
    assert methods[:3] == ["getMe", "deleteWebhook", "getUpdates"]


async def test_redelivered_update_is_absorbed(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with polling(emu, intake) as connector:
        update = emu.push_message("Lampu jalan padam di Jl. Juanda sejak seminggu.")
        await until_stored(intake, 1)
        await until_confirmed(emu, "first delivery confirmed")
        emu.push("message", update["message"], update_id=update["update_id"])  # redelivery
        await until_confirmed(emu, "redelivery confirmed")

        async def absorbed() -> bool:
            return connector.health().counters.get("duplicates") == 1

        await wait_for(absorbed, within=10, what="the duplicate counted")
    assert len(intake.messages) == 1


async def test_crash_between_fetch_and_accept_loses_nothing(emu: TelegramEmulator) -> None:
    intake = RecordingIntake()
    intake.fail_next = 1  # the store is down when the update first arrives
    async with polling(emu, intake) as connector:
        update = emu.push_message("Sampah menumpuk di pasar Segiri, mohon diangkut.")
        [raw] = await until_stored(intake, 1)
        await until_confirmed(emu, "the update confirmed after the retry")
        assert connector.health().counters.get("errors", 0) >= 1
    assert emu.served[update["update_id"]] >= 2  # fetched again, not skipped
    for value, stored_then in intake.saves:  # the offset never passed an unstored update
        if orjson.loads(value)["offset"] > update["update_id"]:
            assert raw.native_id in stored_then


async def test_restart_resumes_from_the_saved_cursor(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with polling(emu, intake):
        first = emu.push_message("Drainase tersumbat di Jl. Pahlawan.")
        await until_stored(intake, 1)
        await until_confirmed(emu, "first update confirmed")
    saved = orjson.loads(intake.cursors[f"telegram:{emu.bot_id}:offset"])["offset"]
    assert saved == first["update_id"] + 1
    calls_before = len(emu.calls)
    second = emu.push_message("Pohon tumbang menutup jalan di Loa Janan.")
    async with polling(emu, intake):
        await until_stored(intake, 2)
        await until_confirmed(emu, "second update confirmed")
    first_poll = next(params for name, params in emu.calls[calls_before:]
                      if name == "getUpdates")
    assert first_poll["offset"] == saved
    assert emu.served[first["update_id"]] == 1  # not fetched again after the restart
    # (the second may have been handed to the stopped poller's abandoned long poll too)
    assert [raw.native_id for raw in intake.messages.values()][1] == \
        f"{second['message']['chat']['id']}:{second['message']['message_id']}"


class GatedIntake(FakeIntake):
    """FakeIntake whose submit waits for ``gate`` (a slow store)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def submit(self, raw: RawMessage) -> IntakeResult:
        self.entered.set()
        await self.gate.wait()
        return await super().submit(raw)


async def test_stop_drains_the_update_being_handled(emu: TelegramEmulator) -> None:
    intake = GatedIntake()
    connector = TelegramConnector(make_settings(emu), public_url=None)
    await connector.start(intake)
    update = emu.push_message("Parit meluap setiap hujan di Jl. Wahid Hasyim.")
    await asyncio.wait_for(intake.entered.wait(), 20)
    stopping = asyncio.create_task(connector.stop())
    await asyncio.sleep(0)  # stop() has signalled; the submit is still in flight
    assert not stopping.done()
    intake.gate.set()
    await asyncio.wait_for(stopping, 20)
    assert len(intake.messages) == 1
    cursor = orjson.loads(intake.cursors[f"telegram:{emu.bot_id}:offset"])
    assert cursor["offset"] == update["update_id"] + 1
    assert connector.health().state == ConnectorState.STOPPED


async def test_a_hard_crash_before_the_submit_returned_loses_nothing(
        emu: TelegramEmulator) -> None:
    intake = GatedIntake()
    crashed = TelegramConnector(make_settings(emu), public_url=None)
    await crashed.start(intake)
    update = emu.push_message("Sekolah rusak di Desa Long Iram, atap bocor.")
    await asyncio.wait_for(intake.entered.wait(), 20)
    assert crashed._task is not None
    crashed._task.cancel()  # the process dies mid-submit: no stop(), no cleanup
    with pytest.raises(asyncio.CancelledError):
        await crashed._task
    assert intake.messages == {} and intake.cursors == {}
    intake.gate.set()  # the store is fine again after the restart
    async with polling(emu, intake):  # a new process, same durable store
        [raw] = await until_stored(intake, 1)
        await until_confirmed(emu, "update confirmed after the restart")
    assert raw.native_id.endswith(f":{update['message']['message_id']}")
    assert emu.served[update["update_id"]] == 2
    await crashed._bot.shutdown()


class BuggyIntake(FakeIntake):
    """FakeIntake with a bug that one message always triggers."""

    async def submit(self, raw: RawMessage) -> IntakeResult:
        if "BUG" in raw.text:
            raise RuntimeError("a bug in the intake")
        return await super().submit(raw)


async def test_a_poison_update_becomes_a_dead_letter_and_the_rest_flows(
        emu: TelegramEmulator) -> None:
    intake = BuggyIntake()
    async with polling(emu, intake) as connector:
        poison = emu.push_message("BUG: this message always fails")
        emu.push_message("Laporan berikutnya tetap harus diterima dengan baik.")
        [raw] = await until_stored(intake, 1)
        await until_confirmed(emu, "both updates confirmed")
        assert connector.health().counters["skipped"] == 1
    assert raw.text.startswith("Laporan berikutnya")
    [(channel, account, reason, payload)] = intake.dead_letters
    assert (channel, account) == ("telegram", emu.username) and "RuntimeError" in reason
    assert orjson.loads(payload)["update_id"] == poison["update_id"]
    assert emu.served[poison["update_id"]] == 5


async def test_429_from_get_updates_is_obeyed(emu: TelegramEmulator) -> None:
    emu.fail("getUpdates", 429, retry_after=1)
    intake = FakeIntake()
    async with polling(emu, intake) as connector:
        emu.push_message("Air PDAM tidak mengalir tiga hari di Sungai Kunjang.")
        await until_stored(intake, 1)
        assert "flood limit, retry after 1s" in (connector.health().last_error or "")
    assert emu.responses[("getUpdates", 429)] == 1  # no second 429: the wait was long enough
    assert emu.flood_violations == 0


async def test_bad_gateway_is_retried(emu: TelegramEmulator) -> None:
    emu.fail("getUpdates", 502, times=2)
    intake = FakeIntake()
    async with polling(emu, intake) as connector:
        emu.push_message("Jembatan kayu di Tenggarong rusak parah.")
        await until_stored(intake, 1)
        assert connector.health().counters.get("errors", 0) >= 2
    assert emu.responses[("getUpdates", 502)] == 2


async def test_rejected_token_fails_the_connector(emu: TelegramEmulator) -> None:
    settings = make_settings(emu, token="999:wrong-token")
    connector = TelegramConnector(settings, public_url=None)
    await connector.start(FakeIntake())
    try:
        async def failed() -> bool:
            return connector.health().state == ConnectorState.FAILED

        await wait_for(failed, within=10, what="the connector failed")
        assert "999:wrong-token" not in (connector.health().last_error or "")
    finally:
        await connector.stop()


# --------------------------------------------------------------------------- conversation


async def test_commands_are_answered_not_stored(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    secret = RawMessage(channel="webform", account="web", native_id="rahasia-1",
                        received_at=datetime.now(UTC), title="Pungutan liar di kelurahan",
                        text="Isi laporan rahasia tentang pungutan liar.", confidential=True)
    code = (await intake.submit(secret)).tracking_code
    async with polling(emu, intake):
        start = emu.push_message("/start")
        emu.push_message("/bantuan")
        emu.push_message(f"/status {code.lower().replace('-', '')}")
        emu.push_message("/status ZZZZZ-ZZZZZ")
        emu.push_message("/status")
        emu.push_message("/batal")
        sent = await until_sent(emu, 6)
        await until_confirmed(emu, "commands confirmed")
    assert len(intake.messages) == 1  # only the one submitted directly
    texts = [item["text"] for item in sent]
    assert "/status KODE" in texts[0] and texts[0] == texts[1]
    assert sent[0]["reply_to_message_id"] == start["message"]["message_id"]
    assert code in texts[2] and "Diterima" in texts[2]
    assert "Pungutan" not in texts[2] and "rahasia" not in texts[2].lower()
    assert "tidak ditemukan" in texts[3]
    assert "ABCDE-12345" in texts[4]
    assert texts[5] == "withdraw:"  # the intake decides and words the answer
    [(channel, _, sender, typed)] = intake.withdrawals
    assert channel == "telegram" and sender and typed is None


async def test_photo_document_and_oversized_file(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    small_id, small_unique = emu.add_file(JPEG[:60], name="small.jpg")
    big_id, big_unique = emu.add_file(JPEG, name="big.jpg")
    pdf_id, pdf_unique = emu.add_file(PDF, name="surat.pdf")
    huge_id, huge_unique = emu.add_file(None, size=25_000_000, name="video.pdf")
    async with polling(emu, intake):
        emu.push_message(caption="Foto genangan banjir di simpang empat Lembuswana.", photo=[
            {"file_id": small_id, "file_unique_id": small_unique, "width": 90, "height": 90,
             "file_size": 60},
            {"file_id": big_id, "file_unique_id": big_unique, "width": 800, "height": 600,
             "file_size": len(JPEG)},
        ])
        emu.push_message(caption="Surat keberatan warga RT 12 terlampir.", document={
            "file_id": pdf_id, "file_unique_id": pdf_unique, "file_name": "surat.pdf",
            "mime_type": "application/pdf", "file_size": len(PDF)})
        oversized = emu.push_message(caption="Rekaman kejadian, ukurannya besar.", document={
            "file_id": huge_id, "file_unique_id": huge_unique, "file_name": "rekaman.pdf",
            "mime_type": "application/pdf", "file_size": 25_000_000})
        # Telegram does not always tell the size in the message: getFile refuses then.
        emu.push_message(caption="Foto kedua yang besar.", user=emu.user(5550099), photo=[
            {"file_id": huge_id, "file_unique_id": huge_unique, "width": 9000,
             "height": 9000}])
        messages = await until_stored(intake, 4)
        await until_sent(emu, 2)
        await until_confirmed(emu, "media updates confirmed")
    photo, document, too_big, unsized = messages
    assert [a.content_type for a in photo.attachments] == ["image/jpeg"]
    assert intake.attachments[photo.attachments[0].sha256 or ""] == JPEG  # the largest size
    assert photo.text.startswith("Foto genangan")
    assert document.attachments[0].content_type == "application/pdf"
    assert document.attachments[0].name == "surat.pdf"
    assert too_big.attachments == () and unsized.attachments == ()
    assert too_big.text.startswith("Rekaman kejadian") and "rekaman.pdf" in too_big.text
    assert "Foto kedua" in unsized.text
    notices = [item for item in emu.sent if "20 MB" in item["text"]]
    assert len(notices) == 2
    assert notices[0]["reply_to_message_id"] == oversized["message"]["message_id"]
    assert [params["file_id"] for name, params in emu.calls if name == "getFile"] == [
        big_id, pdf_id, huge_id]  # the oversized document was never asked for


async def test_a_file_telegram_no_longer_has_is_skipped(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with polling(emu, intake):
        emu.push_message(caption="Foto kerusakan trotoar di Jl. Basuki Rahmat.", photo=[
            {"file_id": "EXPIRED", "file_unique_id": "gone", "width": 640, "height": 480}])
        [raw] = await until_stored(intake, 1)
        [notice] = await until_sent(emu, 1)
        await until_confirmed(emu, "update confirmed")
    assert raw.attachments == () and raw.text.startswith("Foto kerusakan")
    assert "tidak dapat kami unduh" in notice["text"]


async def test_album_and_location_join_the_text_complaint(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    one_id, one_unique = emu.add_file(JPEG, name="a.jpg")
    two_id, two_unique = emu.add_file(PNG, name="b.png")
    async with polling(emu, intake):
        first = emu.push_message("Tanah longsor menutup jalan poros Samarinda-Bontang.")
        for file_id, unique in ((one_id, one_unique), (two_id, two_unique)):
            emu.push_message(media_group_id="album-7", photo=[
                {"file_id": file_id, "file_unique_id": unique, "width": 640, "height": 480}])
        emu.push_message(location={"latitude": -0.4948, "longitude": 117.1436})
        messages = await until_stored(intake, 4)
        await until_confirmed(emu, "album and location confirmed")
    text, photo_a, photo_b, place = messages
    root = complaint_id("telegram", emu.username,
                        f"{first['message']['chat']['id']}:{first['message']['message_id']}")
    assert text.thread_of is None
    assert photo_a.thread_of == photo_b.thread_of == place.thread_of == root
    assert len(photo_a.attachments) == len(photo_b.attachments) == 1
    assert place.location is not None and place.location.lat == pytest.approx(-0.4948)
    assert place.text.startswith("[Lokasi")


async def test_edited_message_names_the_message_it_edits(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with polling(emu, intake):
        original = emu.push_message("Lampu lalu lintas mati di simpang Mal Lembuswana.")
        await until_stored(intake, 1)
        emu.push_edit(original["message"], "Lampu lalu lintas mati sejak pagi di simpang Mal.")
        messages = await until_stored(intake, 2)
        await until_confirmed(emu, "edit confirmed")
    first, edit = messages
    msg = original["message"]
    assert edit.native_id == f"{msg['chat']['id']}:{msg['message_id']}:edit:{msg['date'] + 60}"
    assert edit.edit_of == first.native_id and edit.thread_of is None
    assert edit.text.endswith("sejak pagi di simpang Mal.")


async def test_groups_and_channels_are_ignored_unless_the_bot_is_addressed(
        emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with polling(emu, intake):
        emu.push_message("Ada yang tahu jadwal posyandu?", chat_type="group")
        emu.push_message("Ayo lapor jalan rusak", chat_type="supergroup")
        emu.push("channel_post", {"message_id": 5, "date": 1764390000,
                                  "chat": {"id": -1009, "type": "channel", "title": "Info"},
                                  "text": "Pengumuman"})
        addressed = emu.push_message(f"@{emu.username} jalan rusak di RT 3",
                                     chat_type="supergroup")
        emu.push_message(f"/status@{emu.username}", chat_type="group")
        sent = await until_sent(emu, 2)
        await until_confirmed(emu, "group updates confirmed")
    assert intake.messages == {}
    assert sent[0]["chat_id"] == addressed["message"]["chat"]["id"]
    assert "pesan pribadi" in sent[0]["text"]
    assert "ABCDE-12345" in sent[1]["text"]
    assert len(emu.sent) == 2


# --------------------------------------------------------------------------- webhook


async def post_update(url: str, body: bytes, secret: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    async with aiohttp.ClientSession() as session, \
            session.post(url + ROUTE, data=body, headers=headers) as response:
        return response.status


async def test_webhook_mode_registers_and_receives(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with webhook(emu, intake) as (connector, public_url):
        async def registered() -> bool:
            return emu.webhook is not None and connector.account is not None

        await wait_for(registered, within=10, what="setWebhook")
        assert emu.webhook == {"url": public_url + ROUTE, "secret_token": SECRET,
                               "allowed_updates": ["message", "edited_message"]}
        update = emu.push_message("Banjir setinggi lutut di Perumahan Bengkuring.")
        [raw] = await until_stored(intake, 1)
        await until_confirmed(emu, "webhook delivery acknowledged")
        assert emu.deliveries == [(update["update_id"], 200)]
        assert orjson.loads(raw.raw_payload) == update  # the exact bytes Telegram sent
        # Telegram redelivers: the same complaint, still 200.
        body = orjson.dumps(update)
        assert await post_update(public_url, body, SECRET) == 200
        assert len(intake.messages) == 1
        assert emu.count("getUpdates") == 0


async def test_webhook_refuses_wrong_or_missing_secret(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with webhook(emu, intake) as (connector, public_url):
        await wait_for(_ready(connector), within=10, what="bot identity")
        body = orjson.dumps({"update_id": 1, "message": emu.message("Laporan palsu")})
        assert await post_update(public_url, body, "wrong-secret") == 403
        assert await post_update(public_url, body, None) == 403
        # Kept as dead letters and acknowledged: Telegram must not retry them forever.
        assert await post_update(public_url, b"{not json", SECRET) == 200
        assert await post_update(public_url, b'{"message": {}}', SECRET) == 200
    assert intake.messages == {}
    # Only the authenticated bad bodies are kept for an operator.
    assert [letter[3] for letter in intake.dead_letters] == [b"{not json", b'{"message": {}}']


async def test_webhook_answers_503_until_stored_and_telegram_retries(
        emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    intake.fail_next = 1
    async with webhook(emu, intake):
        update = emu.push_message("Pelayanan KTP di kecamatan sangat lambat.")
        await until_stored(intake, 1)
        await until_confirmed(emu, "redelivery acknowledged")
    assert emu.deliveries == [(update["update_id"], 503), (update["update_id"], 200)]


def _ready(connector: TelegramConnector) -> Any:
    async def check() -> bool:
        return connector.account is not None

    return check


# --------------------------------------------------------------------------- replies


async def test_send_reply_obeys_429_then_succeeds(emu: TelegramEmulator) -> None:
    intake = FakeIntake()
    async with polling(emu, intake) as connector:
        await wait_for(_ready(connector), within=10, what="bot identity")
        target = ReplyTarget(complaint_id="0" * 32, tracking_code="ABCDE-12345",
                             channel="telegram", account=emu.username, native_id="5550001:7",
                             address="5550001", hints={"chat_id": "5550001", "message_id": "7"})
        emu.fail("sendMessage", 429, retry_after=1)
        with pytest.raises(ChannelUnavailable) as caught:
            await connector.send_reply(target, "Kode pelacakan: ABCDE-12345")
        assert caught.value.retry_after == 1
        message_id = await connector.send_reply(target, "Kode pelacakan: ABCDE-12345")
        assert message_id == str(emu.sent[0]["message_id"])
        assert emu.sent[0]["reply_to_message_id"] == 7 and emu.sent[0]["chat_id"] == 5550001
        assert emu.flood_violations == 0  # the second send waited for retry_after
        follow_up = ReplyTarget(complaint_id="1" * 32, tracking_code="FGHJK-12345",
                                channel="telegram", account=emu.username,
                                native_id="5550001:8", address="5550001",
                                hints={"chat_id": "5550001", "message_id": "8",
                                       "follow_up": "1"})
        assert await connector.send_reply(follow_up, "Kode pelacakan: FGHJK-12345") is None
        emu.blocked_chats.add(5550001)
        with pytest.raises(ChannelRejected):
            await connector.send_reply(target, "Kode pelacakan: ABCDE-12345")
    assert len(emu.sent) == 1
