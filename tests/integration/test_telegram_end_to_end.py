"""Telegram through the whole gateway in polling mode: update → durable outbox → Kafka →
central store → the tracking code sent to the chat; an edit revises the stored complaint (no
second complaint, no second answer); after a kill -9 the restarted gateway
resumes from the saved offset (no second complaint) and answers /status from the store."""

from __future__ import annotations

import json
from pathlib import Path

from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import GatewayProcess, PgDatabase, wait_for


async def test_telegram_polling_stores_answers_and_survives_kill9(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str], bot_api: TelegramEmulator
) -> None:
    env = {**kafka_env, "LAPOR_STORE__URL": pg.url,
           "LAPOR_CONNECTORS__TELEGRAM__ENABLED": "true",
           "LAPOR_CONNECTORS__TELEGRAM__MODE": "polling",
           "LAPOR_CONNECTORS__TELEGRAM__TOKEN": bot_api.token,
           "LAPOR_CONNECTORS__TELEGRAM__API_BASE": bot_api.url,
           "LAPOR_CONNECTORS__TELEGRAM__POLL_TIMEOUT_S": "1"}
    gateway = GatewayProcess(tmp_path / "gw", env)
    await gateway.start()
    first = bot_api.push_message("Pohon tumbang menutup Jl. Pangeran Antasari, belum ada petugas.")
    try:
        async def stored() -> list[object]:
            return list(await pg.fetch("SELECT tracking_code, payload FROM complaints"))

        [row] = await wait_for(stored, within=30, what="the Telegram complaint stored")
        code, data = row[0], json.loads(str(row[1]))  # type: ignore[index]
        assert data["channel"] == "telegram" and data["reporter"]["handle"] == "@siti_warga"

        async def acknowledged() -> list[dict[str, object]]:
            return [m for m in bot_api.sent if code in str(m["text"])]

        [ack] = await wait_for(acknowledged, within=30, what="the acknowledgement in the chat")
        assert ack["chat_id"] == 5550001

        edited_text = "Pohon tumbang menutup Jl. Pangeran Antasari sejak subuh, belum ada petugas."
        bot_api.push_edit(first["message"], edited_text)

        async def revised() -> list[object]:
            rows = await stored()
            body = json.loads(str(rows[0][1]))["body"]  # type: ignore[index]
            return rows if body == edited_text else []

        [row] = await wait_for(revised, within=30, what="the edited text in the central store")
        history = json.loads(str(row[1]))["revisions"]  # type: ignore[index]
        assert [v["body"] for v in history] == [data["body"], edited_text]
        assert row[0] == code  # type: ignore[index]
        await wait_for(lambda: _none_pending(pg), within=30, what="the revision delivered")

        gateway.kill9()
        restarted = GatewayProcess(tmp_path / "gw", env)
        await restarted.start()
        gateway = restarted
        bot_api.push_message(f"/status {code}")

        async def status_answer() -> list[dict[str, object]]:
            return [m for m in bot_api.sent if m is not ack and code in str(m["text"])]

        assert [m for m in bot_api.sent if code in str(m["text"])] == [ack]  # one answer

        [answer] = await wait_for(status_answer, within=30, what="the /status answer")
        assert "Diterima" in str(answer["text"])
        assert (await pg.fetch("SELECT count(*) FROM complaints"))[0][0] == 1
    finally:
        assert gateway.terminate() == 0, gateway.log()


async def _none_pending(pg: PgDatabase) -> bool:
    return (await pg.fetch("SELECT count(*) FROM outbox WHERE state = 'pending'"))[0][0] == 0
