"""A whole gateway in this process, every push channel on, for the hostile-input tests.

Real HTTP (aiohttp's test server on loopback), SQLite under ``tmp_path``, a Telegram Bot API
emulator for the webhook registration; Kafka unreachable (see :func:`start_gateway`). After
every test the gateway must still be healthy and must not have logged an unhandled error.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import load_settings
from forwarder.db import open_database
from gateway.app import CONNECTORS, Role, create_app
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import BrokerProcess, wait_for

API_KEY = "partner-key-0123456789"
OPS_TOKEN = "ops-token-abcdefghijklmnop"
WA_SECRET = "wa-app-secret"
META_SECRET = "meta-app-secret"
SMS_SECRET = "sms-hmac-secret"
TG_SECRET = "tg-secret-token_0123"
VERIFY = "verify-token"
MAX_BODY = 256 * 1024  # small, so "over the limit" is cheap to send
PUBLIC_URL = "https://lapor.example.go.id"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/security/" in str(item.path) and "test_fuzz" not in str(item.path):
            item.add_marker(pytest.mark.integration)


@dataclass
class Gateway:
    """The running gateway and what a test needs to talk to it."""

    client: TestClient[Any, Any]
    data_dir: Path

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def port(self) -> int:
        return int(self.client.port or 0)

    async def rows(self, sql: str, *args: Any, file: str = "lapor.db"
                   ) -> list[tuple[Any, ...]]:
        db = await open_database(f"sqlite:///{self.data_dir / file}", pool_size=2)
        try:
            return await db.fetch(sql, *args)
        finally:
            await db.close()

    async def handled(self, within: float = 30.0) -> None:
        """Wait until every webhook body the gateway kept has been handled (the WhatsApp and
        Meta webhooks answer once the body is kept, and parse it in the background)."""
        async def empty() -> bool:
            rows = await self.rows("SELECT count(*) FROM webhook_inbox", file="lapor-inbox.db")
            return rows[0][0] == 0

        await wait_for(empty, within=within, what="the webhook inbox to be handled")


def settings_for(data_dir: Path, bootstrap: str, telegram: TelegramEmulator,
                 connectors: Mapping[str, Any] | None = None, **gateway: Any) -> Any:
    """``connectors`` adds channels (e.g. ``{"email": {...}}``) to the push channels."""
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    return load_settings(
        gateway={"data_dir": str(data_dir), "public_url": PUBLIC_URL, "ops_token": OPS_TOKEN,
                 "max_body_bytes": MAX_BODY, "shutdown_grace_s": 0, **gateway},
        kafka={"bootstrap_servers": bootstrap, "topic_prefix": f"{prefix}.",
               "sink_group": f"{prefix}.sink", "receipts_group": f"{prefix}.receipts",
               "enable_idempotence": False, "partitions": 1},
        connectors={
            "api": {"keys": {"partner": API_KEY}},
            "webform": {"max_file_bytes": 64 * 1024},
            "whatsapp": {"enabled": True, "app_secret": WA_SECRET, "verify_token": VERIFY,
                         "access_token": "graph-token", "phone_number_id": "1065",
                         "api_base": "http://127.0.0.1:9", "max_body_bytes": 64 * 1024},
            "meta": {"enabled": True, "app_secret": META_SECRET, "verify_token": VERIFY,
                     "page_access_token": "page-token", "api_base": "http://127.0.0.1:9",
                     "max_body_bytes": 64 * 1024},
            "sms": {"enabled": True, "provider": "generic", "generic_hmac_secret": SMS_SECRET,
                    "send_api_base": "http://127.0.0.1:9"},
            "telegram": {"enabled": True, "mode": "webhook", "token": telegram.token,
                         "api_base": telegram.url, "secret_token": TG_SECRET},
            **(connectors or {}),
        },
    )


async def start_gateway(tmp_path: Path, telegram: TelegramEmulator,
                        connectors: Mapping[str, Any] | None = None,
                        **gateway: Any) -> AsyncIterator[Gateway]:
    """Kafka is unreachable on purpose: hostile input never needs it (the outbox keeps what
    is accepted), and no consumer group slows the start and stop of every test."""
    data_dir = tmp_path / "data"
    settings = settings_for(data_dir, BrokerProcess().bootstrap, telegram, connectors,
                            **gateway)
    app = create_app(settings, frozenset({Role.GATEWAY, Role.SINK}))
    server = TestServer(app, host="127.0.0.1")
    async with TestClient(server, cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        target = Gateway(client, data_dir)

        async def telegram_ready() -> bool:
            return any(c.name == "telegram" and c.health().state.value == "running"
                       for c in app[CONNECTORS]) and telegram.webhook is not None

        await wait_for(telegram_ready, within=20, what="the Telegram webhook registered")
        yield target
        async with client.get("/healthz") as response:
            assert response.status == 200  # still healthy after everything thrown at it


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator() as emulator:
        yield emulator


@pytest.fixture
async def gw(tmp_path: Path, telegram: TelegramEmulator,
             caplog: pytest.LogCaptureFixture) -> AsyncIterator[Gateway]:
    """The gateway with generous rate limits (the limits have their own tests)."""
    caplog.set_level(logging.WARNING)
    async for target in start_gateway(tmp_path, telegram,
                                      rate_limit_per_ip=100_000, rate_limit_api_per_ip=100_000,
                                      rate_limit_lookup_per_ip=100_000):
        yield target
    unhandled = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
                 and r.name.startswith(("gateway", "connectors", "aiohttp"))]
    assert not unhandled, unhandled


def signed_json(payload: Mapping[str, Any] | bytes) -> bytes:
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()
