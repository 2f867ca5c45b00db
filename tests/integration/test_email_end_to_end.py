"""Email through the whole gateway: a message in Dovecot → durable outbox → Kafka → central
store → the acknowledgement by SMTP (threaded, tracking code); the citizen's answer to it is a
follow-up; after a kill -9 the restarted gateway imports nothing twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.emulators.dovecot import DovecotServer
from tests.integration.support import GatewayProcess, PgDatabase, wait_for
from tests.integration.test_email import (
    PASSWORD,
    USER,
    SmtpSink,
    all_flagged,
    append,
    dovecot,
    mail,
    smtp,
)
from tests.unit.test_email_mime import OURS, plain, reply_to_ack

__all__ = ["dovecot", "smtp"]  # fixtures shared with test_email


async def test_email_is_stored_acknowledged_threaded_and_survives_kill9(
        tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], dovecot: DovecotServer,
        smtp: tuple[SmtpSink, int]) -> None:
    sink, smtp_port = smtp
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__EMAIL__ENABLED": "true",
           "LAPOR_CONNECTORS__EMAIL__IMAP_HOST": "127.0.0.1",
           "LAPOR_CONNECTORS__EMAIL__IMAP_PORT": str(dovecot.port),
           "LAPOR_CONNECTORS__EMAIL__IMAP_SSL": "false",
           "LAPOR_CONNECTORS__EMAIL__USERNAME": USER,
           "LAPOR_CONNECTORS__EMAIL__PASSWORD": PASSWORD,
           "LAPOR_CONNECTORS__EMAIL__FROM_ADDRESS": OURS,
           "LAPOR_CONNECTORS__EMAIL__SMTP_HOST": "127.0.0.1",
           "LAPOR_CONNECTORS__EMAIL__SMTP_PORT": str(smtp_port),
           "LAPOR_CONNECTORS__EMAIL__SMTP_SSL": "false",
           "LAPOR_CONNECTORS__EMAIL__SMTP_USERNAME": ""}
    await asyncio.to_thread(append, dovecot, plain())
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    try:
        async def stored() -> list[object]:
            return list(await pg.fetch("SELECT id, tracking_code, payload FROM complaints"))

        [row] = await wait_for(stored, within=30, what="the email complaint stored")
        cid, code, data = row[0], row[1], json.loads(str(row[2]))  # type: ignore[index]
        assert data["channel"] == "email" and data["reporter"]["email"] == \
            "budi.santoso@example.id"

        async def acknowledged() -> list[object]:
            return list(sink.messages)

        [(mail_from, rcpt, ack)] = await wait_for(acknowledged, within=30,
                                                  what="the acknowledgement by SMTP")
        assert mail_from == OURS and rcpt == ["budi.santoso@example.id"]
        assert ack["In-Reply-To"] == "<plain-1@mail.example.id>"
        assert ack["Message-ID"] == f"<{code}.{cid}@kaltimprov.go.id>"
        assert code in ack["Subject"] and code in ack.get_content()

        # The citizen answers the acknowledgement: a follow-up, not acknowledged again.
        await asyncio.to_thread(append, dovecot, reply_to_ack(str(code), str(cid)))

        async def follow_up() -> list[object]:
            return list(await pg.fetch(
                "SELECT payload FROM complaints WHERE native_id = 'reply-1@mail.example.id'"))

        [(payload,)] = await wait_for(follow_up, within=30, what="the follow-up stored")
        assert json.loads(str(payload))["thread_of"] == cid

        gateway.kill9()
        await asyncio.to_thread(append, dovecot, mail(1))
        restarted = GatewayProcess(tmp_path / "gw", env)
        await restarted.start()
        gateway = restarted
        await all_flagged(dovecot, 3)

        async def three() -> bool:
            return (await pg.fetch("SELECT count(*) FROM complaints"))[0][0] == 3

        await wait_for(three, within=30, what="the mail sent during the outage stored")
        acks = [m for _, _, m in sink.messages]
        assert len([m for m in acks if m["In-Reply-To"] == "<plain-1@mail.example.id>"]) == 1
    finally:
        assert gateway.terminate() == 0, gateway.log()
