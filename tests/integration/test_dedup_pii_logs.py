"""No citizen's personal data in the logs: anonymous and confidential complaints carrying a
NIK, a phone number, an e-mail address and a bank account, through the real intake (caplog)
and through a running gateway process (its log file), accepted, repeated, near-duplicated,
followed up and refused."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from errors import ValidationFailed
from forwarder.db import open_database
from forwarder.fingerprints import FingerprintIndex
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from forwarder.store import CentralStore
from gateway.attachments import AttachmentStore
from gateway.intake import GatewayIntake, NearDuplicates
from gateway.logging_json import setup_logging
from gateway.status import StatusService
from normalizer.raw import RawMessage, Sender
from normalizer.routing import Router
from tests.integration.support import GatewayProcess, PgDatabase, wait_for

NIK = "6472031505900001"
PHONE = "081234567890"
PHONE_E164 = "+6281234567890"
EMAIL = "Siti.Aminah@Gmail.com"
BANK = "1370012345678"
#: Every form in which one of them could leak (as written, normalised, digits only).
SECRETS = [NIK, PHONE, PHONE_E164, PHONE_E164[1:], PHONE[1:], EMAIL, EMAIL.lower(), BANK,
           "Siti Aminah"]
TEXT = (f"Saya warga Sempaja, NIK {NIK}, hp {PHONE}, email {EMAIL}. Bansos PKH belum cair, "
        f"sudah transfer biaya admin ke rek BCA {BANK} tapi tidak ada kabar. Jl. Pahlawan "
        "Samarinda.")
API_KEY = "pii-log-test-key"


def assert_no_pii(log_text: str) -> None:
    leaked = [s for s in SECRETS if s in log_text]
    assert not leaked, f"personal data in the log: {leaked}"


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """Logging as ``lapor-gateway --log-level DEBUG`` sets it up (levels restored after)."""
    names = ["", "aiokafka", "aiohttp.access", "httpx"]
    levels = {name: logging.getLogger(name).level for name in names}
    setup_logging("DEBUG")
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("debug_logging")
async def test_intake_logs_no_pii(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    db = await open_database(f"sqlite:///{tmp_path}/lapor.db")
    try:
        async with Outbox(db) as outbox:
            intake = GatewayIntake(outbox, AttachmentStore(tmp_path / "att", 1024 * 1024),
                                   StatusService(CentralStore(db), outbox), ReplyQueue(db),
                                   Router.from_files(), repeat_window_s=3600,
                                   near_duplicates=NearDuplicates(FingerprintIndex(db), 86400))

            def raw(native_id: str, text: str = TEXT, **extra: object) -> RawMessage:
                return RawMessage(
                    channel="whatsapp", account="main", native_id=native_id,
                    received_at=datetime.now(UTC), text=text,
                    sender=Sender(name="Siti Aminah", phone=PHONE, email=EMAIL,
                                  channel_user_id=PHONE_E164[1:]), **extra)  # type: ignore[arg-type]

            first = await intake.submit(raw("m1", anonymous=True))
            await intake.submit(raw("m2", anonymous=True))  # the same text again: a repeat
            near = await intake.submit(raw("m3", TEXT.replace("belum cair", "blm cair jg"),
                                           confidential=True))
            await intake.submit(raw("m4", f"Tambahan {first.tracking_code}: {TEXT}",
                                    anonymous=True))
            with pytest.raises(ValidationFailed):
                await intake.submit(raw("m5", " ", anonymous=True))
            await intake.dead_letter(channel="whatsapp", account="main",
                                     reason="rejected: unreadable", payload=TEXT.encode(),
                                     content_type="text/plain")
            assert near.complaint_id != first.complaint_id
    finally:
        await db.close()
    assert "intake whatsapp accepted" in caplog.text  # the log was captured
    assert_no_pii(caplog.text)


async def test_gateway_process_logs_no_pii(tmp_path: Path, pg: PgDatabase,
                                           kafka_env: dict[str, str]) -> None:
    gateway = GatewayProcess(tmp_path / "gw", {
        **kafka_env, "LAPOR_STORE__URL": pg.url,
        "LAPOR_CONNECTORS__API__KEYS": json.dumps({"app": API_KEY})})
    await gateway.start()
    try:
        url = f"{gateway.url}/api/v1/complaints"
        reporter = {"name": "Siti Aminah", "phone": PHONE, "email": EMAIL}
        bodies = [
            {"external_id": "a1", "body": TEXT, "anonymous": True, "reporter": reporter},
            {"external_id": "a2", "body": TEXT.replace("belum", "blm"), "confidential": True,
             "reporter": reporter},
            {"external_id": "a3", "body": TEXT, "anonymous": True, "reporter": reporter,
             "incident_date": "2999-01-01"},  # refused: in the future
            {"external_id": "a4", "body": TEXT, "reporter": {**reporter, "phone": "x" * 41},
             "anonymous": True},  # refused: the schema
        ]
        codes = []
        async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
            for body in bodies:
                async with session.post(url, json=body) as r:
                    if r.status == 202:
                        codes.append((await r.json())["tracking_code"])
                    else:
                        assert r.status in (400, 422), await r.text()
            assert len(codes) == 2

        async def stored() -> bool:
            rows = await pg.fetch("SELECT count(*) FROM complaints")
            return rows[0][0] == 2

        await wait_for(stored, within=30, what="both complaints in the central store")
    finally:
        assert gateway.terminate() == 0, gateway.log()
    log_text = gateway.log_path.read_text(errors="replace")
    assert "intake api accepted" in log_text
    assert_no_pii(log_text)
