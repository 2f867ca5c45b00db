"""The operators' JSON API under ``/ops/api/`` (bearer ``gateway.ops_token``).

``GET /ops/api/connectors`` lists every connector with its state, last success, last error and
counters, plus the forwarder (outbox depth and age, publisher error, embedded broker);
``POST /ops/api/connectors/{name}/pause`` and ``/resume``; ``GET /ops/api/dead-letters`` lists
what could not become a complaint (without the payload). Without an ``ops_token`` configured
the API answers 403: it is never open.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from config.settings import GatewaySettings
from connectors.api import problem
from connectors.base import BaseConnector

DEAD_LETTERS_LISTED = 200  # newest first; the CLI and dashboard page through more later

ConnectorsOf = Callable[[web.Application], list[BaseConnector]]
ForwarderOf = Callable[[web.Application], Awaitable[dict[str, Any]]]
DeadLettersOf = Callable[[web.Application, int], Awaitable[list[dict[str, Any]]]]


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: orjson.dumps(o).decode())


def connector_json(connector: BaseConnector) -> dict[str, Any]:
    health = connector.health()
    return {"name": connector.name, "channels": list(connector.channels),
            "state": health.state.value, "last_success": health.last_success,
            "last_error": health.last_error, "last_error_at": health.last_error_at,
            "counters": health.counters}


def ops_routes(settings: GatewaySettings, connectors_of: ConnectorsOf, forwarder_of: ForwarderOf,
               dead_letters_of: DeadLettersOf) -> list[web.AbstractRouteDef]:
    """The routes, each guarded by the bearer token."""
    token = settings.ops_token.get_secret_value().encode() if settings.ops_token else None

    def guarded(handler: Callable[[web.Request], Awaitable[web.Response]]
                ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def check(request: web.Request) -> web.Response:
            if token is None:
                return problem(403, "ops_disabled", detail="set gateway.ops_token to enable")
            header = request.headers.get("Authorization", "")
            given = header[7:].strip() if header[:7].lower() == "bearer " else ""
            if not given or not hmac.compare_digest(
                    given.encode("utf-8", "surrogateescape"), token):
                return problem(401, "unauthorized", detail="missing or wrong ops token")
            return await handler(request)
        return check

    async def list_connectors(request: web.Request) -> web.Response:
        return _json({"connectors": [connector_json(c) for c in connectors_of(request.app)],
                      "forwarder": await forwarder_of(request.app)})

    def find(request: web.Request) -> BaseConnector | None:
        name = request.match_info["name"]
        return next((c for c in connectors_of(request.app) if c.name == name), None)

    async def pause(request: web.Request) -> web.Response:
        connector = find(request)
        if connector is None:
            return problem(404, "not_found", detail="no such connector")
        connector.pause()
        return _json(connector_json(connector))

    async def resume(request: web.Request) -> web.Response:
        connector = find(request)
        if connector is None:
            return problem(404, "not_found", detail="no such connector")
        connector.resume()
        return _json(connector_json(connector))

    async def dead_letters(request: web.Request) -> web.Response:
        return _json({"dead_letters": await dead_letters_of(request.app, DEAD_LETTERS_LISTED)})

    return [
        web.get("/ops/api/connectors", guarded(list_connectors)),
        web.post("/ops/api/connectors/{name}/pause", guarded(pause)),
        web.post("/ops/api/connectors/{name}/resume", guarded(resume)),
        web.get("/ops/api/dead-letters", guarded(dead_letters)),
    ]
