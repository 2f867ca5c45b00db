"""The email connector against a real Dovecot (and a real SMTP server, aiosmtpd) through the
real intake (normaliser, SQLite outbox, attachment store): every complaint once, machine mail
recorded, nothing flagged before it is durable, through dropped connections, a killed server
and a UIDVALIDITY change."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from imapclient import IMAPClient
from pydantic import SecretStr

from config.email import EmailSettings
from connectors.base import ReplyTarget
from connectors.email import STOP_GRACE_S, EmailConnector
from errors import StoreUnavailable
from forwarder.db import Database, open_database
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from forwarder.store import CentralStore
from gateway.attachments import AttachmentStore
from gateway.intake import GatewayIntake
from gateway.status import StatusService
from normalizer.ids import complaint_id
from tests.emulators.dovecot import DovecotServer, free_port, render_config
from tests.integration.support import wait_for
from tests.unit.test_email_mime import COMPLAINTS, NOT_COMPLAINTS, OURS, plain, reply_to_ack

USER, PASSWORD = "gateway", "rahasia"
KEYWORD = b"LaporDiterima"
MiB = 1024 * 1024


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer(users={USER: PASSWORD})
    server.start()
    yield server
    server.cleanup()


class Store:
    """The real intake on a SQLite outbox, and what it holds."""

    def __init__(self, db: Database, outbox: Outbox, intake: GatewayIntake) -> None:
        self.db, self.outbox, self.intake = db, outbox, intake

    async def rows(self) -> list[dict[str, Any]]:
        found = await self.db.fetch(
            "SELECT id, native_id, payload, reply_hints, thread_of FROM outbox"
            " ORDER BY created_us")
        return [{"id": r[0], "native_id": r[1], "complaint": orjson.loads(r[2]),
                 "hints": orjson.loads(r[3]), "thread_of": r[4]} for r in found]

    async def dead_letters(self) -> list[str]:
        return [str(r[0]) for r in await self.db.fetch("SELECT reason FROM dead_letters")]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    async with Outbox(db) as outbox:
        intake = GatewayIntake(outbox, AttachmentStore(tmp_path / "att", 10 * MiB),
                               StatusService(CentralStore(db), outbox), ReplyQueue(db))
        yield Store(db, outbox, intake)
    await db.close()


@dataclass
class SmtpSink:
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              message_from_bytes(envelope.content, policy=default_policy)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


class DroppingProxy:
    """A TCP proxy to Dovecot that can cut the connection after N bytes from the server."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.drop_after: int | None = None
        self.drops = 0
        self.flowing = asyncio.Event()  # cleared: the server's bytes are held (a hung server)
        self.flowing.set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        sent = 0

        async def upstream() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            nonlocal sent
            while data := await up_reader.read(65536):
                await self.flowing.wait()
                if self.drop_after is not None and sent + len(data) > self.drop_after:
                    writer.write(data[: max(0, self.drop_after - sent)])
                    self.drop_after = None
                    self.drops += 1
                    return  # cut mid-response
                sent += len(data)
                writer.write(data)
                await writer.drain()

        pumps = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self._tasks.discard(task)


def settings(port: int, smtp_port: int | None = None, **extra: Any) -> EmailSettings:
    base: dict[str, Any] = {
        "enabled": True, "imap_host": "127.0.0.1", "imap_port": port, "imap_ssl": False,
        "username": USER, "password": SecretStr(PASSWORD), "from_address": OURS,
        "smtp_host": "127.0.0.1" if smtp_port else None, "smtp_port": smtp_port or 25,
        "smtp_ssl": False, "smtp_username": "", "max_backoff_s": 1.0, "timeout_s": 10.0}
    base.update(extra)
    return EmailSettings(**base)


def imap(server: DovecotServer) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    client.login(USER, PASSWORD)
    return client


def append(server: DovecotServer, *messages: bytes, when: datetime | None = None) -> None:
    client = imap(server)
    try:
        for raw in messages:
            client.append("INBOX", raw, msg_time=when)
    finally:
        client.logout()


def flags(server: DovecotServer) -> dict[int, tuple[bytes, ...]]:
    client = imap(server)
    try:
        client.select_folder("INBOX", readonly=True)
        return {uid: tuple(data[b"FLAGS"]) for uid, data in client.fetch("1:*", ["FLAGS"]).items()}
    finally:
        client.logout()


async def all_flagged(server: DovecotServer, count: int, within: float = 30) -> None:
    async def done() -> bool:
        found = await asyncio.to_thread(flags, server)
        return len(found) == count and all(KEYWORD in f and b"\\Seen" in f
                                           for f in found.values())

    await wait_for(done, within=within, what=f"{count} messages flagged")


def mail(n: int, sender: str = "warga") -> bytes:
    return (f"From: {sender}{n}@example.id\r\nSubject: Laporan {n}\r\n"
            f"Message-ID: <bulk-{n}@example.id>\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"\r\nJalan rusak di RT {n:03d}, mohon diperbaiki. {'isi ' * 200}\r\n").encode()


# --------------------------------------------------------------------------- tests


async def test_corpus_each_complaint_once_machine_mail_recorded_and_replies_threaded(
        dovecot: DovecotServer, store: Store, smtp: tuple[SmtpSink, int]) -> None:
    sink, smtp_port = smtp
    await asyncio.to_thread(append, dovecot, *(raw for _, raw, _ in COMPLAINTS),
                            *(raw for _, raw in NOT_COMPLAINTS), plain())  # plain() twice
    total = len(COMPLAINTS) + len(NOT_COMPLAINTS) + 1
    connector = EmailConnector(settings(dovecot.port, smtp_port))
    await connector.start(store.intake)
    try:
        await all_flagged(dovecot, total)
        rows = await store.rows()
        assert len(rows) == len(COMPLAINTS)  # the duplicate delivery is the same complaint
        letters = await store.dead_letters()
        assert len(letters) == len(NOT_COMPLAINTS)
        assert all(reason.startswith("not a complaint") for reason in letters)
        by_mid = {row["native_id"]: row for row in rows}
        first = by_mid["plain-1@mail.example.id"]
        assert first["id"] == complaint_id("email", OURS, "plain-1@mail.example.id")
        assert first["complaint"]["title"] == "Jalan berlubang di Jl. Juanda"
        assert first["complaint"]["reporter"]["email"] == "budi.santoso@example.id"
        assert "menulis" not in first["complaint"]["body"]
        assert first["hints"]["address"] == "budi.santoso@example.id"
        attached = by_mid["att-1@example.id"]["complaint"]
        assert sorted(a["content_type"] for a in attached["attachments"]) == [
            "image/jpeg", "image/png"]  # the .exe is refused and named in the text
        assert "foto.jpg.exe" in attached["body"]
        assert [a["name"] for a in by_mid["fwd-1@samarindakota.go.id"]["complaint"][
            "attachments"]] == ["got.jpg"]
        assert any(row["native_id"].startswith("sha256:") for row in rows)

        # The acknowledgement: from our address, threaded, the code in subject and body.
        code = first["complaint"]["tracking_code"]
        target = ReplyTarget(complaint_id=first["id"], tracking_code=code, channel="email",
                             account=OURS, native_id=first["native_id"],
                             address=None, hints=first["hints"])
        our_id = await connector.send_reply(target, f"Kode pelacakan: {code}.")
        assert len(sink.messages) == 1
        mail_from, rcpt, sent = sink.messages[0]
        assert mail_from == OURS and rcpt == ["budi.santoso@example.id"]
        assert sent["In-Reply-To"] == "<plain-1@mail.example.id>"
        assert sent["Message-ID"] == our_id == f"<{code}.{first['id']}@kaltimprov.go.id>"
        assert code in sent["Subject"] and sent["Auto-Submitted"] == "auto-replied"
        assert code in sent.get_content()

        # The citizen answers our acknowledgement: a follow-up of the complaint.
        await asyncio.to_thread(append, dovecot, reply_to_ack(code, first["id"]))
        await all_flagged(dovecot, total + 1)
        follow = [row for row in await store.rows()
                  if row["native_id"] == "reply-1@mail.example.id"]
        assert len(follow) == 1 and follow[0]["thread_of"] == first["id"]
        started = time.monotonic()
    finally:
        await connector.stop()
    assert time.monotonic() - started < 3.0  # stop leaves IDLE promptly


async def test_subject_code_makes_a_follow_up(dovecot: DovecotServer, store: Store) -> None:
    await asyncio.to_thread(append, dovecot, plain())
    connector = EmailConnector(settings(dovecot.port))
    await connector.start(store.intake)
    try:
        await all_flagged(dovecot, 1)
        [first] = await store.rows()
        code = first["complaint"]["tracking_code"]
        follow_up = (f"From: budi.santoso@example.id\r\nSubject: Tambahan laporan {code}\r\n"
                     "Message-ID: <later@example.id>\r\n\r\nSekarang lubangnya dua.\r\n").encode()
        await asyncio.to_thread(append, dovecot, follow_up)
        await all_flagged(dovecot, 2)
        rows = await store.rows()
        assert rows[1]["thread_of"] == first["id"]
    finally:
        await connector.stop()


async def test_dropped_connection_store_outage_and_killed_server_lose_nothing(
        dovecot: DovecotServer, store: Store, caplog: pytest.LogCaptureFixture) -> None:
    await asyncio.to_thread(append, dovecot, *(mail(n) for n in range(30)))
    proxy = DroppingProxy(dovecot.port)
    await proxy.start()
    proxy.drop_after = 15_000  # inside the second FETCH (10 messages of about 1 KiB each)
    real_submit = store.intake.submit
    failing = {"bulk-17@example.id"}

    async def submit(raw: Any) -> Any:
        if raw.native_id in failing:
            raise StoreUnavailable("disk full")
        return await real_submit(raw)

    store.intake.submit = submit  # type: ignore[method-assign]
    connector = EmailConnector(settings(proxy.port, fetch_batch=10))
    await connector.start(store.intake)
    try:
        async def the_rest_stored() -> bool:
            return len(await store.rows()) == 29

        await wait_for(the_rest_stored, within=40, what="29 complaints")
        assert proxy.drops == 1
        assert "command: FETCH => socket error: EOF" in caplog.text  # cut mid-fetch
        # Not durable: not flagged, whatever was flagged around it.
        current = await asyncio.to_thread(flags, dovecot)
        assert KEYWORD not in current[18] and b"\\Seen" not in current[18]
        failing.clear()
        await all_flagged(dovecot, 30)

        # The server dies (kill -9) and comes back; mail sent meanwhile arrives once.
        dovecot.kill()
        dovecot.start()
        await asyncio.to_thread(append, dovecot, *(mail(n) for n in range(30, 35)))
        await all_flagged(dovecot, 35)
    finally:
        await connector.stop()
        await proxy.stop()
    rows = await store.rows()
    assert sorted(row["native_id"] for row in rows) == sorted(
        f"bulk-{n}@example.id" for n in range(35))
    assert connector.health().counters["errors"] >= 2  # the drop and the kill were seen


async def test_stop_is_prompt_with_a_hung_server_and_oversized_mail_is_recorded(
        dovecot: DovecotServer, store: Store) -> None:
    big = mail(1) + b"x" * 5000
    await asyncio.to_thread(append, dovecot, big, mail(2))
    proxy = DroppingProxy(dovecot.port)
    await proxy.start()
    connector = EmailConnector(settings(proxy.port, max_message_bytes=4000))
    await connector.start(store.intake)
    try:
        await all_flagged(dovecot, 2)
        [letter] = await store.dead_letters()
        assert "over max_message_bytes" in letter
        assert [row["native_id"] for row in await store.rows()] == ["bulk-2@example.id"]
        proxy.flowing.clear()  # the server stops answering (even the DONE that ends IDLE)
        started = time.monotonic()
        await connector.stop()
        assert time.monotonic() - started < STOP_GRACE_S + 2.0
    finally:
        proxy.flowing.set()
        await connector.stop()
        await proxy.stop()


async def test_uidvalidity_change_rescans_without_duplicates(
        dovecot: DovecotServer, store: Store) -> None:
    await asyncio.to_thread(append, dovecot, *(mail(n) for n in range(5)))
    connector = EmailConnector(settings(dovecot.port))
    await connector.start(store.intake)
    cursor_name = f"email:{OURS}:INBOX"
    try:
        await all_flagged(dovecot, 5)
        before = orjson.loads(await store.outbox.load_cursor(cursor_name) or "{}")
        assert before["last_uid"] == 5
        # Recreate the mailbox (its messages kept, their flags and UIDs gone): a new
        # UIDVALIDITY, and the server no longer says which messages we took.
        dovecot.stop()
        dovecot.recreate_maildir(USER)

        async def clock_moved() -> bool:  # Dovecot takes the clock as the new UIDVALIDITY
            return int(time.time()) > before["uidvalidity"]

        await wait_for(clock_moved, within=3, what="a new second")
        dovecot.start()
        await asyncio.to_thread(append, dovecot, mail(5))
        await all_flagged(dovecot, 6)
        after = orjson.loads(await store.outbox.load_cursor(cursor_name) or "{}")
        assert after["uidvalidity"] != before["uidvalidity"]
    finally:
        await connector.stop()
    rows = await store.rows()
    assert sorted(row["native_id"] for row in rows) == [f"bulk-{n}@example.id" for n in range(6)]
    duplicates = connector.health().counters.get("duplicates", 0)
    assert duplicates == 5  # the rescan met every old message again; dedup absorbed them


async def test_first_connection_imports_only_the_backfill_window(
        dovecot: DovecotServer, store: Store) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    await asyncio.to_thread(append, dovecot, mail(1), when=old)
    await asyncio.to_thread(append, dovecot, mail(2))
    connector = EmailConnector(settings(dovecot.port, backfill_days=7))
    await connector.start(store.intake)
    try:
        async def one() -> bool:
            return len(await store.rows()) == 1

        await wait_for(one, within=20, what="the recent complaint")
        # Paused: new mail waits, un-flagged; resumed: it is read.
        connector.pause()
        await asyncio.to_thread(append, dovecot, mail(3))
        current = await asyncio.to_thread(flags, dovecot)
        connector.resume()

        async def two() -> bool:
            return len(await store.rows()) == 2

        await wait_for(two, within=20, what="the mail that waited during the pause")
    finally:
        await connector.stop()
    assert [row["native_id"] for row in await store.rows()] == [
        "bulk-2@example.id", "bulk-3@example.id"]
    assert KEYWORD not in current[1]  # the old mail is left alone
    assert KEYWORD not in current[3]


async def test_wrong_password_degrades_and_names_the_mailbox(
        dovecot: DovecotServer, store: Store) -> None:
    connector = EmailConnector(settings(dovecot.port, password=SecretStr("salah")))
    await connector.start(store.intake)
    try:
        async def reported() -> bool:
            return "login refused" in (connector.health().last_error or "")

        await wait_for(reported, within=20, what="the login error")
        assert connector.health().state.value == "degraded"
        assert "salah" not in (connector.health().last_error or "")
    finally:
        await connector.stop()


async def test_polling_when_the_server_has_no_idle(store: Store) -> None:
    server = DovecotServer(users={USER: PASSWORD},
                           extra_config="imap_capability = IMAP4rev1 LITERAL+ UIDPLUS\n")
    server.start()
    try:
        def capabilities() -> tuple[bytes, ...]:
            client = imap(server)
            try:
                return tuple(client.capabilities())
            finally:
                client.logout()

        assert b"IDLE" not in await asyncio.to_thread(capabilities)
        connector = EmailConnector(settings(server.port, poll_interval_s=0.3))
        await connector.start(store.intake)
        try:
            await asyncio.to_thread(append, server, mail(1))
            await all_flagged(server, 1)
            await asyncio.to_thread(append, server, mail(2))
            await all_flagged(server, 2)
        finally:
            await connector.stop()
    finally:
        server.cleanup()
    assert len(await store.rows()) == 2


async def test_one_mailbox_per_agency_each_answers_from_its_own_address(
        store: Store, smtp: tuple[SmtpSink, int]) -> None:
    sink, smtp_port = smtp
    server = DovecotServer(users={"lapor": "a", "pu": "b"})
    server.start()
    agency = "pengaduan@pu.kaltimprov.go.id"
    try:
        def deliver(user: str, password: str, raw: bytes) -> None:
            client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
            client.login(user, password)
            client.append("INBOX", raw)
            client.logout()

        await asyncio.to_thread(deliver, "lapor", "a", mail(1))
        await asyncio.to_thread(deliver, "pu", "b", mail(2))
        common = {"imap_host": "127.0.0.1", "imap_port": server.port, "imap_ssl": False,
                  "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_ssl": False,
                  "smtp_username": ""}
        connector = EmailConnector(EmailSettings(enabled=True, max_backoff_s=1.0, mailboxes=[
            {**common, "username": "lapor", "password": "a", "from_address": OURS},
            {**common, "username": "pu", "password": "b", "from_address": agency}]))
        await connector.start(store.intake)
        try:
            async def both() -> bool:
                return len(await store.rows()) == 2

            await wait_for(both, within=20, what="a complaint from each mailbox")
            rows = {row["native_id"]: row for row in await store.rows()}
            second = rows["bulk-2@example.id"]
            target = ReplyTarget(complaint_id=second["id"],
                                 tracking_code=second["complaint"]["tracking_code"],
                                 channel="email", account=agency,
                                 native_id=second["native_id"], address=None,
                                 hints=second["hints"])
            await connector.send_reply(target, "Terima kasih.")
        finally:
            await connector.stop()
    finally:
        server.cleanup()
    assert rows["bulk-1@example.id"]["id"] == complaint_id("email", OURS, "bulk-1@example.id")
    assert second["id"] == complaint_id("email", agency, "bulk-2@example.id")
    [(mail_from, rcpt, sent)] = sink.messages
    assert mail_from == agency and rcpt == ["warga2@example.id"]
    assert sent["Message-ID"].endswith("@pu.kaltimprov.go.id>")


def test_dovecot_configs_for_2_3_and_2_4(dovecot: DovecotServer) -> None:
    doveconf = shutil.which("doveconf") or "/usr/bin/doveconf"
    checked = subprocess.run([doveconf, "-c", str(dovecot.config), "-n"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr  # the installed version accepts its config
    newer = render_config(dovecot.root, 10143, (2, 4))
    assert newer.startswith("dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n")
    for setting in ("auth_allow_cleartext = yes", "mail_driver = maildir", "%{user}",
                    "passwd_file_path = "):
        assert setting in newer
    for old in ("disable_plaintext_auth", "mail_location", "%u", "args ="):
        assert old not in newer
