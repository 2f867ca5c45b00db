"""Who may see and change things on ``/ops``: the token's holder, with a CSRF token on every
change; nobody when no token is configured."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.integration.support import GatewayProcess, PgDatabase, browser

TOKEN = "ops-auth-token"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def test_dashboard_needs_a_session_and_csrf_tokens(
    tmp_path: Path, pg: PgDatabase, kafka_env: dict[str, str]
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", {**kafka_env, "LAPOR_STORE__URL": pg.url,
                                               "LAPOR_GATEWAY__OPS_TOKEN": TOKEN})
    await gateway.start()
    try:
        async with browser() as session:
            async with session.get(f"{gateway.url}/ops", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/ops/login"
            async with session.post(f"{gateway.url}/ops/connectors/api/pause",
                                    data={"csrf_token": "x"}) as r:
                assert r.status == 403  # no session
            async with session.post(f"{gateway.url}/ops/login", data={"token": TOKEN},
                                    allow_redirects=False) as r:
                assert r.status == 303
                cookie = r.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
                assert "Path=/ops" in cookie
            async with session.get(f"{gateway.url}/ops?refresh=0") as r:
                assert r.status == 200
                assert r.headers["Cache-Control"] == "no-store"
                page = await r.text()
            assert '<html lang="id">' in page and 'data-refresh="0"' in page
            csrf = CSRF.search(page)
            assert csrf is not None
            async with session.post(f"{gateway.url}/ops/connectors/api/pause",
                                    data={"csrf_token": "forged"}) as r:
                assert r.status == 403
            async with session.post(f"{gateway.url}/ops/connectors/api/pause",
                                    data={"csrf_token": csrf.group(1), "lang": "en"},
                                    allow_redirects=False) as r:
                assert r.status == 303
                assert r.headers["Location"] == "/ops?done=pause&subject=api&lang=en"
            async with session.get(f"{gateway.url}/ops/api/connectors/api",
                                   headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert (await r.json())["state"] == "paused"
            async with session.get(f"{gateway.url}/ops/static/ops.js") as r:
                assert r.status == 200 and "location.reload" in await r.text()
        async with aiohttp.ClientSession() as other:  # a bearer works without a session
            async with other.get(f"{gateway.url}/ops?lang=en",
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Accept-Language": "id"}) as r:
                assert r.status == 200 and '<html lang="en">' in await r.text()
    finally:
        assert gateway.terminate() == 0, gateway.log()


async def test_dashboard_is_closed_without_a_token(
    tmp_path: Path, kafka_env: dict[str, str]
) -> None:
    gateway = GatewayProcess(tmp_path / "gw", kafka_env)
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/ops") as r:
                assert r.status == 403
            async with session.post(f"{gateway.url}/ops/login", data={"token": ""}) as r:
                assert r.status == 403
    finally:
        assert gateway.terminate() == 0, gateway.log()
