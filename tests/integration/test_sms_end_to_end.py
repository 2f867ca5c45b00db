"""SMS through the whole gateway: a Gammu ``RunOnReceive`` run (``lapor-gateway sms-receive``
with the variables Gammu sets) → the generic webhook → central store → the tracking code sent
back through the provider's send API; then ``STATUS KODE`` answered by SMS."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.emulators.sms import EmulatedSmsProvider
from tests.integration.support import GatewayProcess, PgDatabase, wait_for

SECRET = "gammu-shared-secret"
CITIZEN = "081234567890"


@pytest.fixture
async def provider() -> AsyncIterator[EmulatedSmsProvider]:
    emulator = EmulatedSmsProvider(generic_secret=SECRET)
    await emulator.start()
    yield emulator
    await emulator.stop()


def _gammu_run(env: dict[str, str], text: str) -> subprocess.CompletedProcess[str]:
    """What Gammu SMSD does on receipt: run the command with SMS_* variables set."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "sms-receive", "IN20261129_101500_00_0812_00.txt"],
        env={**env, "SMS_MESSAGES": "1", "SMS_1_NUMBER": CITIZEN, "SMS_1_TEXT": text,
             "DECODED_PARTS": "0"},
        capture_output=True, text=True, timeout=60, check=False,
    )


async def test_gammu_sms_is_stored_and_answered_then_status_by_sms(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], provider: EmulatedSmsProvider
) -> None:
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__SMS__ENABLED": "true",
           "LAPOR_CONNECTORS__SMS__PROVIDER": "gammu",
           "LAPOR_CONNECTORS__SMS__ACCOUNT": "1708",
           "LAPOR_CONNECTORS__SMS__GENERIC_HMAC_SECRET": SECRET,
           "LAPOR_CONNECTORS__SMS__SEND_API_BASE": provider.url}
    gateway = GatewayProcess(tmp_path / "gw", env)
    env["LAPOR_CONNECTORS__SMS__GATEWAY_URL"] = gateway.url
    gateway.env["LAPOR_CONNECTORS__SMS__GATEWAY_URL"] = gateway.url
    await gateway.start()
    try:
        run = await asyncio.to_thread(
            _gammu_run, gateway.env, "Sampah menumpuk di pasar Segiri sudah seminggu, bau.")
        assert run.returncode == 0, run.stderr
        assert CITIZEN not in run.stderr  # no phone numbers in logs

        async def stored() -> list[object]:
            return list(await pg.fetch("SELECT tracking_code, payload FROM complaints"))

        [row] = await wait_for(stored, within=30, what="the SMS complaint stored")
        code, data = row[0], json.loads(str(row[1]))  # type: ignore[index]
        assert data["channel"] == "sms" and data["reporter"]["phone"] == "+6281234567890"

        async def acknowledged() -> list[object]:
            return [m for m in provider.sent if code in m.text]

        [ack] = await wait_for(acknowledged, within=30, what="the SMS acknowledgement")
        assert ack.to in ("+6281234567890", CITIZEN)

        run = await asyncio.to_thread(_gammu_run, gateway.env, f"status {code.lower()}")
        assert run.returncode == 0, run.stderr

        async def status_answer() -> list[object]:
            return [m for m in provider.sent if m is not ack and code in m.text]

        [answer] = await wait_for(status_answer, within=30, what="the STATUS answer by SMS")
        assert "Diterima" in answer.text or "diterima" in answer.text
        assert (await pg.fetch("SELECT count(*) FROM complaints"))[0][0] == 1
    finally:
        assert gateway.terminate() == 0, gateway.log()
