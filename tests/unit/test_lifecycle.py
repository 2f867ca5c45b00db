"""The complaint lifecycle on a real SQLite store: status events applied once and in order,
due dates, overdue alerts once, notices owed once per event, withdrawal by the reporter only,
and nothing confidential in any answer."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config.settings import KafkaSettings, load_settings
from connectors.base import BaseConnector, ReplyTarget
from connectors.commands import status_text
from connectors.telegram_texts import status_text as telegram_status_text
from errors import ChannelRejected
from forwarder.db import Database, open_database
from forwarder.kafka import Producer
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from forwarder.sla import WITA
from forwarder.status_events import Status, StatusEvent, json_schema
from forwarder.store import CentralStore, parse_utc
from gateway.app import _renderer
from gateway.cli import erase_personal_data
from gateway.lifecycle import (
    Lifecycle,
    SlaAlerts,
    Withdrawal,
    notice_text,
    withdraw_text,
)
from gateway.replies import ReplyLoop
from gateway.status import StatusService
from normalizer.ids import complaint_id, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage, Sender
from normalizer.schema import Attachment, Complaint

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "config" / "status.v1.schema.json"
SECRET_TITLE = "Pungutan liar oleh oknum kelurahan"
SECRET_BODY = "Saya Budi Santoso 081234567890 dimintai uang Rp500.000 untuk surat."
#: Monday 23 November 2026, 10:00 WITA.
MONDAY = datetime(2026, 11, 23, 10, tzinfo=WITA)


class SentRecords(Producer):
    """A producer that records what it was asked to send (acknowledged at once)."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings(), "unused:9092")
        self.records: list[tuple[str, bytes, bytes]] = []

    async def send_many(self, topic: str, records: list[Any]) -> list[BaseException | None]:
        self.records.extend((topic, key, value) for key, value, _ in records)
        return [None for _ in records]


class Recorder(BaseConnector):
    name = "fake"
    replies = True

    def __init__(self, refuse: bool = False) -> None:
        super().__init__()
        self.sent: list[str] = []
        self.targets: list[ReplyTarget] = []
        self.refuse = refuse

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        if self.refuse:
            raise ChannelRejected("outside the 24-hour window and no template configured")
        self.sent.append(text)
        self.targets.append(target)
        return f"m{len(self.sent)}"


class SmsRecorder(Recorder):
    name = "sms"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    yield database
    await database.close()


def _complaint(native_id: str, *, received_at: datetime = MONDAY, confidential: bool = False,
               anonymous: bool = False, user: str = "chat-1") -> tuple[Complaint, RawMessage]:
    raw = RawMessage(channel="fake", account="bot", native_id=native_id,
                     received_at=received_at, title=SECRET_TITLE, text=SECRET_BODY,
                     sender=Sender(channel_user_id=user, name="Budi Santoso"),
                     confidential=confidential, anonymous=anonymous, agency="Dinas PU")
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    return normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                     gateway_version="test", raw_ref=None), raw


async def _stored(db: Database, native_id: str, **kwargs: Any) -> Complaint:
    complaint, raw = _complaint(native_id, **kwargs)
    async with Outbox(db) as outbox:
        await outbox.add(complaint, b"", "x", {}, raw.sender.channel_user_id)
    await CentralStore(db).upsert_many([complaint])
    return complaint


def _event(event_id: str, code: str, status: Status, at: datetime, **extra: Any) -> StatusEvent:
    return StatusEvent(event_id=event_id, tracking_code=code, status=status, at=at,
                       actor="admin:sari", **extra)


# --------------------------------------------------------------------------- the event


def test_published_status_schema_is_in_sync() -> None:
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == json_schema(), (
        "regenerate: python -m forwarder.status_events > config/status.v1.schema.json")


@pytest.mark.parametrize(("payload", "problem"), [
    ({"status": "verified", "at": "2026-11-23T02:00:00Z", "actor": "a"}, "tracking_code or"),
    ({"tracking_code": "ABCDE-12345", "status": "forwarded", "at": "2026-11-23T02:00:00Z",
      "actor": "a"}, "names the agency"),
    ({"tracking_code": "ABCDE-12345", "status": "verified", "at": "2026-11-23T02:00:00",
      "actor": "a"}, "UTC offset"),
    ({"tracking_code": "ABCDE-12345", "status": "reopened", "at": "2026-11-23T02:00:00Z",
      "actor": "a"}, "status"),
    ({"tracking_code": "ABCDE-12345", "status": "closed", "at": "2026-11-23T02:00:00Z",
      "actor": "a", "extra": 1}, "extra"),
    # A time in the future would outrank every real event after it.
    ({"tracking_code": "ABCDE-12345", "status": "closed", "at": "2999-01-01T00:00:00Z",
      "actor": "a"}, "future"),
])
def test_invalid_events_are_refused_with_the_reason(payload: dict[str, Any],
                                                    problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StatusEvent.model_validate_json(json.dumps({"event_id": "e1", **payload}))
    assert problem in str(caught.value)


def test_control_characters_are_stripped() -> None:
    event = StatusEvent.model_validate_json(
        '{"event_id": "e\\u00001", "tracking_code": "ABCDE-12345", "status": "rejected",'
        ' "at": "2026-11-23T02:00:00Z", "actor": "admin", "note": "bukan\\u0000 wewenang"}')
    assert (event.event_id, event.note) == ("e1", "bukan wewenang")


# --------------------------------------------------------------------------- the store


async def test_events_apply_once_latest_wins_and_final_is_final(db: Database) -> None:
    store = CentralStore(db)
    complaint = await _stored(db, "m1")
    code = complaint.tracking_code
    verified = _event("e-verified", code.lower().replace("-", ""), Status.VERIFIED,
                      MONDAY + timedelta(hours=2))
    forwarded = _event("e-forwarded", code, Status.FORWARDED, MONDAY + timedelta(days=1),
                       agency="Dinas PU Kota Samarinda")
    assert (await store.apply_status(forwarded)).applied  # type: ignore[union-attr]
    # verified arrives late (older than forwarded): kept in history, not applied.
    late = await store.apply_status(verified)
    assert late is not None and not late.applied
    # Redelivery of an applied event: the same answer, nothing new recorded.
    again = await store.apply_status(forwarded)
    assert again is not None and again.applied
    closed = _event("e-closed", code, Status.CLOSED, MONDAY + timedelta(days=3))
    assert (await store.apply_status(closed)).applied  # type: ignore[union-attr]
    answered = _event("e-late-answer", code, Status.ANSWERED, MONDAY + timedelta(days=4))
    assert not (await store.apply_status(answered)).applied  # type: ignore[union-attr]

    stored = await store.find(code)
    assert stored is not None and stored.status == "closed"
    assert stored.agency == "Dinas PU Kota Samarinda"
    history = await store.history(complaint.id)
    assert [(h.seq, h.status, h.applied) for h in history] == [
        (1, "forwarded", True), (2, "verified", False), (3, "closed", True),
        (4, "answered", False)]
    assert await store.apply_status(_event("e-x", "ZZZZZ-ZZZZZ", Status.CLOSED, MONDAY)) is None


async def test_due_dates_follow_the_status(db: Database) -> None:
    store = CentralStore(db)
    complaint = await _stored(db, "m2")
    due = await store.due_dates(complaint.id)
    # Monday 23 Nov + 3 working days: end of Thursday 26 Nov (WITA); settlement + 60 days.
    assert parse_utc(str(due["verification"])) == datetime(2026, 11, 27, tzinfo=WITA)
    assert parse_utc(str(due["settlement"])) == datetime(2027, 1, 23, tzinfo=WITA)
    assert due["follow_up"] is None
    # Forwarded on Friday 27 Nov: follow-up within 5 working days = end of Fri 4 Dec.
    await store.apply_status(_event("f", complaint.tracking_code, Status.FORWARDED,
                                    datetime(2026, 11, 27, 9, tzinfo=WITA), agency="Dinas PU"))
    due = await store.due_dates(complaint.id)
    assert parse_utc(str(due["follow_up"])) == datetime(2026, 12, 5, tzinfo=WITA)


async def test_complaints_stored_before_the_lifecycle_get_their_clocks(db: Database) -> None:
    store = CentralStore(db)
    complaint = await _stored(db, "m-old")
    await db.execute("UPDATE complaints SET verify_due = NULL, settle_due = NULL")
    assert await store.backfill_due_dates() == 1
    assert await store.backfill_due_dates() == 0
    due = await store.due_dates(complaint.id)
    assert parse_utc(str(due["verification"])) == datetime(2026, 11, 27, tzinfo=WITA)
    assert due["settlement"] is not None


async def test_overdue_is_listed_by_stage_and_alerted_once(db: Database) -> None:
    store = CentralStore(db)
    late = await _stored(db, "m3")  # received Monday 23 Nov, verification due 27 Nov 00:00
    fresh = await _stored(db, "m4", received_at=MONDAY + timedelta(days=7))
    done = await _stored(db, "m5")
    await store.apply_status(_event("v", done.tracking_code, Status.VERIFIED,
                                    MONDAY + timedelta(hours=1)))
    saturday = datetime(2026, 11, 28, 12, tzinfo=WITA)
    overdue = await store.overdue(10, now=saturday)
    assert [(o.tracking_code, o.stage) for o in overdue] == [(late.tracking_code, "verification")]
    assert (await store.overdue_counts(now=saturday))["verification"] == 1
    assert fresh.tracking_code not in {o.tracking_code for o in overdue}

    producer = SentRecords()
    alerts = SlaAlerts(store=store, producer=producer, topic="complaints.alerts.v1",
                       source="test", interval_s=60)
    assert len(await alerts.check(now=saturday)) == 1
    assert await alerts.check(now=saturday) == []  # once per complaint and stage
    [(topic, key, value)] = producer.records
    alert = json.loads(value)
    assert topic == "complaints.alerts.v1" and key == late.id.encode()
    assert alert["stage"] == "verification" and alert["tracking_code"] == late.tracking_code
    assert SECRET_BODY not in value.decode() and "Budi" not in value.decode()


# --------------------------------------------------------------------------- notices


async def test_each_status_event_is_owed_once(db: Database) -> None:
    complaint = await _stored(db, "m6")
    channel = Recorder()
    loop = ReplyLoop(ReplyQueue(db), [channel], "https://lapor.example.go.id")
    notice: dict[str, str | None] = {
        "kind": "status", "id": complaint.id, "tracking_code": complaint.tracking_code,
        "channel": "fake", "event_id": "e-answer", "status": "answered",
        "agency": "Dinas PU", "answer": "Perbaikan dijadwalkan pekan depan.", "actor": "x"}
    await loop.on_status([notice])
    await loop.on_status([notice])  # redelivered notice
    await loop.on_status([{**notice, "channel": "unknown"}])  # no connector: nothing owed
    await loop.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while loop.sent < 1:  # a condition with a deadline
            assert asyncio.get_running_loop().time() < deadline, "the notice was not sent"
            await asyncio.sleep(0.01)
    finally:
        await loop.stop()
    assert channel.sent == [notice_text(notice, "https://lapor.example.go.id")]
    states = await ReplyQueue(db).states(complaint.id)
    assert [(s.kind, s.state) for s in states] == [("status:e-answer", "sent")]


async def test_a_refused_notice_falls_back_to_the_reporters_phone_once(db: Database) -> None:
    raw = RawMessage(channel="fake", account="bot", native_id="m-wa", received_at=MONDAY,
                     text=SECRET_BODY, sender=Sender(channel_user_id="6281234567890",
                                                     phone="081234567890"))
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    complaint = normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                          gateway_version="test", raw_ref=None)
    async with Outbox(db) as outbox:
        await outbox.add(complaint, b"", "x", {"address": "6281234567890"}, "6281234567890")
    whatsapp, sms = Recorder(refuse=True), SmsRecorder()
    loop = ReplyLoop(ReplyQueue(db), [whatsapp, sms], None)
    notice: dict[str, str | None] = {
        "id": cid, "tracking_code": complaint.tracking_code, "channel": "fake",
        "event_id": "e-closed", "status": "closed"}
    await loop.on_status([notice])
    await loop.start()
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while not sms.sent:
            assert asyncio.get_running_loop().time() < deadline, "no fallback sent"
            await asyncio.sleep(0.01)
        await loop.on_status([notice])  # redelivered: nothing new owed on either channel
    finally:
        await loop.stop()
    assert sms.sent == [notice_text(notice, None)] and whatsapp.sent == []
    assert sms.targets[0].address == "+6281234567890"
    states = {s.kind: s.state for s in await ReplyQueue(db).states(cid)}
    assert states == {"status:e-closed": "failed", "status:e-closed>sms": "sent"}


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.RECEIVED])
def test_notices_never_carry_the_complaint_or_the_reporter(status: Status) -> None:
    text = notice_text({"tracking_code": "ABCDE-12345", "status": status.value,
                        "agency": "Dinas PU", "note": "Bukan wewenang pemerintah kota.",
                        "answer": "Jalan sudah diperbaiki.", "actor": "admin"}, None)
    assert text is not None and "ABCDE-12345" in text and "STATUS ABCDE-12345" in text
    assert SECRET_TITLE not in text and "Budi" not in text


def test_long_answers_are_cut_and_self_withdrawal_is_not_notified_again() -> None:
    text = notice_text({"tracking_code": "ABCDE-12345", "status": "answered",
                        "answer": "kata " * 1000}, None)
    assert text is not None and len(text) < 1200 and "..." in text
    assert notice_text({"tracking_code": "ABCDE-12345", "status": "withdrawn",
                        "actor": "pelapor"}, None) is None


async def test_status_answers_hide_confidential_content_and_anonymous_reporters(
        db: Database) -> None:
    secret = await _stored(db, "m7", confidential=True, anonymous=True)
    store = CentralStore(db)
    await store.apply_status(_event("s-f", secret.tracking_code, Status.FORWARDED,
                                    MONDAY + timedelta(hours=1), agency="Inspektorat",
                                    note="Pelapor Budi Santoso 081234567890"))
    async with Outbox(db) as outbox:
        view = await StatusService(store, outbox).find(secret.tracking_code)
    assert view is not None and view.status == "forwarded"
    public = view.public_json()
    answers = {  # every way a status is shown: API, page, Telegram, SMS/WhatsApp/Meta
        "api": json.dumps(public),
        "page": _renderer()("status.html", {"view": view, "code": secret.tracking_code}),
        "telegram": telegram_status_text(secret.tracking_code, public),
        "text": status_text(secret.tracking_code, public),
    }
    for where, shown in answers.items():
        assert secret.tracking_code in shown, where
        for private in (SECRET_TITLE, "Pungutan", SECRET_BODY, "Budi", "081234567890",
                        "chat-1"):
            assert private not in shown, (where, private)


# --------------------------------------------------------------------------- withdrawal


async def test_only_the_reporter_withdraws_within_the_window(db: Database) -> None:
    now = datetime.now(UTC)
    mine = await _stored(db, "m8", received_at=now)
    producer = SentRecords()
    store = CentralStore(db)
    async with Outbox(db) as outbox:
        lifecycle = Lifecycle(outbox=outbox, store=store, producer=producer,
                              topic="complaints.status.v1", source="test",
                              withdraw_window_s=3600)
        other = await lifecycle.withdraw(channel="fake", account="bot", sender_key="chat-2",
                                         typed_code=mine.tracking_code)
        assert other.outcome is Withdrawal.NOT_YOURS and producer.records == []
        assert "pelapornya sendiri" in withdraw_text(other)
        unknown = await lifecycle.withdraw(channel="fake", account="bot", sender_key="chat-1",
                                           typed_code="ZZZZZ-ZZZZZ")
        assert unknown.outcome is Withdrawal.NOT_FOUND
        # Without a code: the sender's newest complaint.
        done = await lifecycle.withdraw(channel="fake", account="bot", sender_key="chat-1",
                                        typed_code=None)
        assert done.outcome is Withdrawal.WITHDRAWN and done.tracking_code == mine.tracking_code
        [(topic, key, value)] = producer.records
        event = StatusEvent.model_validate_json(value)
        assert topic == "complaints.status.v1" and key == mine.id.encode()
        assert event.status is Status.WITHDRAWN and event.actor == "pelapor"
        assert (await store.apply_status(event)).applied  # type: ignore[union-attr]
        final = await lifecycle.withdraw(channel="fake", account="bot", sender_key="chat-1",
                                         typed_code=mine.tracking_code)
        assert final.outcome is Withdrawal.FINAL

        late = await _stored(db, "m9", received_at=now)
        await db.execute("UPDATE outbox SET created_us = created_us - 3601000000 WHERE id = $1",
                         late.id)  # sent an hour and a second ago
        too_late = await lifecycle.withdraw(channel="fake", account="bot",
                                                sender_key="chat-1",
                                                typed_code=late.tracking_code)
        assert too_late.outcome is Withdrawal.TOO_LATE


# --------------------------------------------------------------------------- erasure (UU PDP)


async def test_erasure_leaves_an_anonymised_record(db: Database, tmp_path: Path) -> None:
    complaint, raw = _complaint("m10")
    digest = "ab" * 32
    photo = tmp_path / "data" / "attachments" / digest[:2] / digest
    photo.parent.mkdir(parents=True)
    photo.write_bytes(b"jpeg bytes")
    complaint = complaint.model_copy(update={"attachments": (Attachment(
        name="ktp-budi-santoso.jpg", content_type="image/jpeg", size=10, sha256=digest,
        storage_ref=f"file:attachments/{digest[:2]}/{digest}"),)})
    async with Outbox(db) as outbox:
        await outbox.add(complaint, b'{"from": "chat-1", "name": "Budi Santoso"}', "x",
                         {"chat_id": "chat-1"}, "chat-1")
    store = CentralStore(db)
    await store.upsert_many([complaint])
    await ReplyQueue(db).enqueue(complaint.id, "ack", "fake", "Terima kasih Budi Santoso")
    await store.apply_status(_event("ans", complaint.tracking_code, Status.ANSWERED,
                                    MONDAY + timedelta(days=1),
                                    answer="Pak Budi Santoso, 081234567890, sudah kami hubungi."))
    settings = load_settings(None, store={"url": f"sqlite:///{tmp_path}/lapor.db"},
                             gateway={"data_dir": str(tmp_path / "data")})
    out = io.StringIO()
    assert await erase_personal_data(settings, [complaint.tracking_code.lower()], out) == 0
    assert "1 file(s) deleted" in out.getvalue() and not photo.exists()

    dump = ""
    for table in ("outbox", "complaints", "replies", "status_history"):
        dump += repr(await db.fetch(f"SELECT * FROM {table}"))  # noqa: S608 - fixed names
    for private in ("Budi", "081234567890", "chat-1", "ktp-"):
        assert private not in dump, private
    stored = await store.find(complaint.tracking_code)
    assert stored is not None and stored.status == "answered"  # the record stays countable
    kept = Complaint.from_json(stored.payload)
    assert kept.reporter.anonymous and kept.reporter.name is None
    assert kept.attachments[0].size == 10 and kept.attachments[0].storage_ref is None
    assert kept.body.startswith("Saya [dihapus] ")
    assert await store.count() == 1
    out = io.StringIO()
    assert await erase_personal_data(settings, ["ZZZZZ-ZZZZZ"], out) == 1
    assert "no complaint" in out.getvalue()
