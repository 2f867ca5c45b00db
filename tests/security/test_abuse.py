"""Abuse controls: per-address and per-partner rate limits answered 429 with Retry-After, in
bounded memory; the client address behind a proxy only when configured."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.settings import GatewaySettings
from gateway.ratelimit import RateLimiter
from tests.emulators.telegram import TelegramEmulator
from tests.security.conftest import API_KEY, WA_SECRET, Gateway, start_gateway
from tests.security.test_hostile import wa_body


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate_and_says_when() -> None:
    clock = Clock()
    limiter = RateLimiter(60, burst_s=3, max_keys=10, clock=clock)  # 1/s, 3 at once
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    wait = limiter.take("a")
    assert wait is not None and 0.99 <= wait <= 1.0
    assert limiter.take("b") is None  # another client has its own bucket
    clock.now += 1.0
    assert limiter.take("a") is None and limiter.take("a") is not None


def test_memory_is_bounded_under_a_flood_of_addresses() -> None:
    clock = Clock()
    limiter = RateLimiter(60, burst_s=1, max_keys=100, clock=clock)
    assert limiter.take("steady") is None
    for n in range(10_000):
        limiter.take(f"10.0.{n // 256}.{n % 256}")
        if n % 50 == 0:
            limiter.take("steady")  # recently seen: kept
    assert len(limiter) == 100
    assert limiter.take("steady") is not None  # still remembered, still limited


@pytest.fixture
async def strict(tmp_path: Path, telegram: TelegramEmulator,
                 caplog: pytest.LogCaptureFixture) -> AsyncIterator[Gateway]:
    """Burst of one for the form and look-ups (6 a minute, 10 s of burst), two for a
    partner, three webhook deliveries per address."""
    caplog.set_level(logging.WARNING)
    async for target in start_gateway(tmp_path, telegram, rate_limit_per_ip=6,
                                      rate_limit_api_per_ip=1000, rate_limit_per_partner=12,
                                      rate_limit_webhook_per_ip=18,
                                      rate_limit_lookup_per_ip=6):
        yield target


async def _status(gw: Gateway, method: str, path: str, **kwargs: object) -> tuple[int, str]:
    async with gw.client.request(method, path, **kwargs) as response:  # type: ignore[arg-type]
        await response.read()
        if response.status == 429:
            retry = response.headers["Retry-After"]
            assert retry.isdigit() and int(retry) >= 1
            for name in ("Content-Security-Policy", "X-Content-Type-Options"):
                assert name in response.headers
        return response.status, response.headers.get("Retry-After", "")


async def test_form_is_limited_per_address(strict: Gateway) -> None:
    first, _ = await _status(strict, "POST", "/lapor", data={"isi": "x"})
    second, retry = await _status(strict, "POST", "/lapor", data={"isi": "x"})
    assert first == 403 and (second, retry) == (429, "10")  # CSRF refused it; then limited
    assert (await _status(strict, "GET", "/"))[0] == 200  # reading the form is not limited


async def test_api_is_limited_per_partner(strict: Gateway) -> None:
    body = {"body": "Jalan rusak di depan pasar, sudah sebulan."}
    results = [await _status(strict, "POST", "/api/v1/complaints",
                             headers={"X-API-Key": API_KEY},
                             json={**body, "external_id": f"r{n}"}) for n in range(3)]
    assert [r[0] for r in results] == [202, 202, 429]
    # Another credential (here a wrong one) has its own bucket, and is refused for itself.
    assert (await _status(strict, "POST", "/api/v1/complaints", headers={"X-API-Key": "no"},
                          json=body))[0] == 401


async def test_webhooks_are_limited_per_address_and_meta_redelivers(strict: Gateway) -> None:
    from tests.emulators.graph import signature

    statuses = []
    for n in range(4):
        body = wa_body(f"wamid.RL{n}", f"Laporan nomor {n}: jalan berlubang di Jl. Merdeka.")
        statuses.append((await _status(strict, "POST", "/webhooks/whatsapp", data=body, headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(WA_SECRET, body)}))[0])
    assert statuses == [200, 200, 200, 429]  # the fourth is redelivered by Meta later
    await strict.handled()
    rows = await strict.rows("SELECT count(*) FROM outbox")
    assert rows[0][0] == 3  # nothing half-received: the refused one was never read


async def test_status_lookups_are_limited_per_address(strict: Gateway) -> None:
    assert (await _status(strict, "GET", "/status/AAAAA-AAAAA"))[0] == 404
    assert (await _status(strict, "GET", "/api/v1/complaints/BBBBB-BBBBB"))[0] == 429


async def test_forwarded_for_is_trusted_only_when_configured(strict: Gateway) -> None:
    """Without ``trust_forwarded_for`` a client cannot escape its limit by inventing
    addresses in X-Forwarded-For."""
    assert (await _status(strict, "GET", "/status/AAAAA-AAAAA",
                          headers={"X-Forwarded-For": "1.1.1.1"}))[0] == 404
    assert (await _status(strict, "GET", "/status/AAAAA-AAAAA",
                          headers={"X-Forwarded-For": "2.2.2.2"}))[0] == 429


def test_limits_and_secrets_come_from_config() -> None:
    defaults = GatewaySettings()
    assert defaults.rate_limit_webhook_per_ip >= 50 * defaults.rate_limit_per_ip
    assert defaults.ops_token is None and defaults.secret_key is None  # never built in
    assert "ops_token" not in json.dumps(defaults.model_dump(mode="json")).replace(
        '"ops_token": null', "")
