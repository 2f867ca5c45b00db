"""The complaint lifecycle by email, through the whole system: real Dovecot, real SMTP
(aiosmtpd), PostgreSQL and the broker. A complaint by email; status events on
``complaints.status.v1`` (one redelivered) each reach the citizen by SMTP once, threaded on our
acknowledgement; an SMTP failure, a kill -9 and the event redelivered still make one message;
``STATUS KODE`` by email is answered without the complaint's content or reporter and is not
stored; ``BATAL`` from another address is refused, from the reporter withdraws."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller

from connectors.base import ReplyTarget
from connectors.email import EmailConnector
from tests.emulators.dovecot import DovecotServer, free_port
from tests.integration.support import GatewayProcess, PgDatabase, wait_for
from tests.integration.test_email import PASSWORD, USER, SmtpSink, append, dovecot, settings
from tests.integration.test_lifecycle_end_to_end import AGENCY, _event
from tests.unit.test_email_mime import OURS, plain

__all__ = ["dovecot"]  # the fixture shared with test_email

CITIZEN = "budi.santoso@example.id"
NEIGHBOUR = "tetangga@example.id"


@dataclass
class FlakySink(SmtpSink):
    """An SMTP server that answers ``451`` (try again later) to the next ``failing`` mails."""

    failing: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.failing > 0:
            self.failing -= 1
            return "451 4.3.0 Mohon coba lagi nanti"
        return await super().handle_DATA(server, session, envelope)

    def to(self, address: str) -> list[EmailMessage]:
        return [cast(EmailMessage, m) for _, rcpt, m in self.messages if rcpt == [address]]

    def count(self, address: str, words: str) -> int:
        return sum(words in m.get_content() for m in self.to(address))


@pytest.fixture
def flaky_smtp() -> Iterator[tuple[FlakySink, int]]:
    sink = FlakySink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


def command(sender: str, n: int, subject: str, body: str) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, OURS, subject
    message["Message-ID"] = f"<cmd-{n}@mail.example.id>"
    message.set_content(body)
    return bytes(message)


def gateway_env(kafka_env: dict[str, str], pg: PgDatabase, imap_port: int,
                smtp_port: int) -> dict[str, str]:
    email = {"ENABLED": "true", "IMAP_HOST": "127.0.0.1", "IMAP_PORT": str(imap_port),
             "IMAP_SSL": "false", "USERNAME": USER, "PASSWORD": PASSWORD, "FROM_ADDRESS": OURS,
             "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "SMTP_SSL": "false",
             "SMTP_USERNAME": ""}
    return {**kafka_env, "LAPOR_STORE__URL": pg.url,
            **{f"LAPOR_CONNECTORS__EMAIL__{key}": value for key, value in email.items()}}


async def test_status_by_email_once_across_kill9_and_status_batal_commands(
        tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], dovecot: DovecotServer,
        flaky_smtp: tuple[FlakySink, int]) -> None:
    sink, smtp_port = flaky_smtp
    topic = kafka_env["LAPOR_KAFKA__TOPIC_PREFIX"] + "complaints.status.v1"
    gateway = GatewayProcess(tmp_path / "gw", gateway_env(kafka_env, pg, dovecot.port,
                                                          smtp_port))
    await gateway.start()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_env["LAPOR_KAFKA__BOOTSTRAP_SERVERS"])
    await producer.start()

    async def publish(key: str, value: bytes) -> None:
        await producer.send_and_wait(topic, value, key=key.encode())

    try:
        # ---- a complaint by email, acknowledged by SMTP
        await asyncio.to_thread(append, dovecot, plain())

        async def stored() -> list[Any]:
            return list(await pg.fetch("SELECT id, tracking_code FROM complaints"))

        [(cid, code)] = await wait_for(stored, within=60, what="the email complaint stored")

        async def acknowledged() -> list[EmailMessage]:
            return sink.to(CITIZEN)

        [ack] = await wait_for(acknowledged, within=60, what="the acknowledgement")
        ack_id = ack["Message-ID"]
        assert ack_id == f"<{code}.{cid}@kaltimprov.go.id>"

        # ---- verified (delivered twice) and forwarded: one email each, threaded
        await publish(cid, _event("v-mail", cid, "verified"))
        await publish(cid, _event("f-mail", cid, "forwarded", agency=AGENCY))
        await publish(cid, _event("v-mail", cid, "verified"))

        async def notified() -> bool:
            return (sink.count(CITIZEN, "telah diverifikasi") == 1
                    and sink.count(CITIZEN, "diteruskan ke " + AGENCY) == 1)

        await wait_for(notified, within=60, what="verified and forwarded notices by SMTP")
        notices = sink.to(CITIZEN)[1:]
        for notice in notices:
            assert notice["In-Reply-To"] == ack_id
            assert notice["References"].split() == ["<plain-1@mail.example.id>", ack_id]
            assert code in notice["Subject"] and notice["Auto-Submitted"] == "auto-replied"
        assert len({n["Message-ID"] for n in [ack, *notices]}) == 3

        # ---- the SMTP server refuses for now, the gateway dies, the event comes again
        sink.failing = 1
        answer = _event("ans-mail", cid, "answered", agency=AGENCY,
                        answer="Lubang sudah ditambal oleh tim UPTD pada Senin pagi.")
        await publish(cid, answer)

        async def tried_once() -> bool:
            rows = await pg.fetch("SELECT state, last_error FROM replies"
                                  " WHERE kind = 'status:ans-mail'")
            return bool(rows) and rows[0][0] == "queued" and "451" in str(rows[0][1])

        await wait_for(tried_once, within=60, what="the refused attempt recorded")
        gateway.kill9()
        restarted = GatewayProcess(tmp_path / "gw", gateway.env)
        restarted.port, restarted.url = gateway.port, gateway.url
        gateway = restarted
        await gateway.start()
        await publish(cid, answer)  # the central system sends it again

        async def answered() -> bool:
            rows = await pg.fetch("SELECT state FROM replies WHERE kind = 'status:ans-mail'")
            return [r[0] for r in rows] == ["sent"]

        await wait_for(answered, within=90, what="the answer sent after the restart")
        assert sink.count(CITIZEN, "Lubang sudah ditambal") == 1

        # ---- STATUS from a neighbour: the public status only; BATAL from them is refused
        await asyncio.to_thread(append, dovecot, command(NEIGHBOUR, 1, "Tanya", f"STATUS {code}"))
        await asyncio.to_thread(append, dovecot, command(NEIGHBOUR, 2, f"BATAL {code}", ""))

        async def neighbour_answered() -> list[EmailMessage]:
            got = sink.to(NEIGHBOUR)
            return got if len(got) == 2 else []

        answers = await wait_for(neighbour_answered, within=60, what="the neighbour answered")
        texts = {m["In-Reply-To"]: m.get_content() for m in answers}
        assert f"Laporan {code}: Dijawab" in texts["<cmd-1@mail.example.id>"]
        assert "pelapornya sendiri" in texts["<cmd-2@mail.example.id>"]
        for text in texts.values():
            assert "Budi" not in text and CITIZEN not in text and "SDN 012" not in text
            assert "Lubang" not in text and "Juanda" not in text

        # ---- the reporter answers our notice with "batal": withdrawn, answered once
        await asyncio.to_thread(append, dovecot, command(
            CITIZEN, 3, f"Re: Jalan berlubang di Jl. Juanda [{code}]", "batal"))

        async def withdrawn() -> bool:
            rows = await pg.fetch("SELECT status FROM complaints WHERE id = $1", cid)
            return bool(rows[0][0] == "withdrawn") and \
                sink.count(CITIZEN, f"Laporan {code} telah ditarik atas permintaan Anda") == 1

        await wait_for(withdrawn, within=60, what="the complaint withdrawn by email")

        async def settled() -> bool:
            rows = await pg.fetch("SELECT count(*) FROM replies WHERE state <> 'sent'")
            return rows[0][0] == 0

        await wait_for(settled, within=30, what="no reply left queued")
        # Commands are answered, never stored as complaints or follow-ups.
        assert [r[0] for r in await pg.fetch("SELECT id FROM complaints")] == [cid]
        assert sink.count(CITIZEN, "telah diverifikasi") == 1
        assert sink.count(CITIZEN, "diteruskan ke " + AGENCY) == 1
        assert sink.count(CITIZEN, "Lubang sudah ditambal") == 1
        assert sink.count(CITIZEN, "telah ditarik") == 1  # no second notice of the withdrawal
        statuses = json.dumps([list(r) for r in await pg.fetch(
            "SELECT status FROM status_history WHERE complaint_id = $1 ORDER BY at", cid)])
        assert statuses.count("verified") == 1 and statuses.count("answered") == 1
    finally:
        await producer.stop()
        assert gateway.terminate() == 0, gateway.log()


async def test_a_notice_owed_by_email_for_another_channel_goes_from_the_first_smtp_mailbox(
        flaky_smtp: tuple[FlakySink, int]) -> None:
    sink, smtp_port = flaky_smtp
    connector = EmailConnector(settings(1, smtp_port))  # sending needs no IMAP
    target = ReplyTarget(complaint_id="0123456789abcdef0123456789abcdef",
                         tracking_code="K7M2Q-9XD4T", channel="email", account="", native_id="",
                         address=CITIZEN, kind="status:v-wa>email")
    provider_id = await connector.send_reply(target, "Laporan K7M2Q-9XD4T telah diverifikasi.")
    [message] = sink.to(CITIZEN)
    assert message["Message-ID"].strip() == provider_id and OURS in message["From"]
    assert message["Subject"] == "Perkembangan laporan Anda [K7M2Q-9XD4T]"
    assert "telah diverifikasi" in message.get_content()
