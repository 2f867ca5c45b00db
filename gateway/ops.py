"""Operations: the connectors' control and health, dead-letter replay, and the JSON API.

:class:`OpsService` is what the ops API, the dashboard (``gateway.ops_dashboard``), the
alert evaluator and ``/metrics`` share. The JSON API under ``/ops/api/`` (bearer
``gateway.ops_token``; 403 when no token is configured, so it is never open), in the manner of
Kafka Connect's REST API:

* ``GET /ops/api/connectors``: every connector (state, tasks, last success, last error with
  time and count, counters, throughput, backlog) and the forwarder (outbox depth and age).
* ``GET /ops/api/connectors/{name}``: one connector; ``POST …/{name}/pause|resume|restart``.
  A pause is persisted and survives a restart of the gateway.
* ``GET /ops/api/dead-letters`` (``?limit=``), ``GET /ops/api/dead-letters/{id}`` (with the raw
  payload), ``POST /ops/api/dead-letters/{id}/replay``.
* ``GET /ops/api/alerts``, ``GET /ops/api/overdue``.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web

from config.settings import GatewaySettings
from connectors.api import problem
from connectors.base import BaseConnector, ConnectorState
from errors import LaporError, StoreUnavailable, ValidationFailed
from forwarder.outbox import Outbox
from gateway.ops_store import OpsStore, Throughput
from normalizer.schema import Complaint

log = logging.getLogger(__name__)

DEAD_LETTERS_LISTED = 200  # newest first, unless ?limit= asks for fewer or more
DEAD_LETTERS_MAX = 1000
OVERDUE_LISTED = 50

#: The lifecycle's overdue complaints (``CentralStore.overdue``), newest first: each a dict
#: with at least ``tracking_code``, ``agency`` and ``due_at``. Empty until it is wired in.
OverdueSource = Callable[[int], Awaitable[Sequence[dict[str, Any]]]]
#: Publishes one complaint record (key, value) to ``complaints.v1`` again.
Republish = Callable[[bytes, bytes], Awaitable[None]]
ForwarderState = Callable[[], Awaitable[dict[str, Any]]]


async def no_overdue(limit: int) -> Sequence[dict[str, Any]]:
    """The default overdue source: nothing (before the lifecycle is wired in)."""
    return []


class OpsService:
    """Control and health of the connectors, dead letters and their replay."""

    def __init__(self, *, connectors: Sequence[BaseConnector], outbox: Outbox, store: OpsStore,
                 throughput: Throughput, forwarder_state: ForwarderState,
                 republish: Republish, overdue: OverdueSource = no_overdue,
                 worker: str = "local") -> None:
        self.connectors = list(connectors)
        self.outbox = outbox
        self.store = store
        self.throughput = throughput
        self._forwarder_state = forwarder_state
        self._republish = republish
        self.overdue_source = overdue
        self._worker = worker

    def find(self, name: str) -> BaseConnector | None:
        return next((c for c in self.connectors if c.name == name), None)

    async def apply_persisted_pauses(self) -> None:
        """Pause again what an operator paused before the restart (call after start)."""
        paused = await self.store.paused()
        for connector in self.connectors:
            if connector.name in paused:
                connector.pause()
                log.info("connector %s stays paused (operator's pause)",
                         connector.name, extra={"connector": connector.name})

    def sample(self) -> None:
        """Take one throughput sample of every connector."""
        for connector in self.connectors:
            self.throughput.sample(connector.name,
                                   connector.health().counters.get("received", 0))

    def connector_json(self, connector: BaseConnector,
                       backlog: dict[str, int] | None = None) -> dict[str, Any]:
        health = connector.health()
        counters = health.counters
        state = health.state.value
        return {
            "name": connector.name,
            "channels": list(connector.channels),
            "state": state,
            # One task per connector; its failure is the connector's (rolled up).
            "tasks": [{"id": 0, "state": state, "worker_id": self._worker,
                       "trace": health.last_error if health.state in (
                           ConnectorState.FAILED, ConnectorState.DEGRADED) else None}],
            "last_success": health.last_success,
            "last_error": health.last_error,
            "last_error_at": health.last_error_at,
            "error_count": counters.get("errors", 0),
            "counters": counters,
            "throughput_per_min": round(self.throughput.rate_per_min(connector.name), 3),
            "series": self.throughput.series(connector.name, counters.get("received", 0)),
            "backlog": sum((backlog or {}).get(ch, 0) for ch in connector.channels),
        }

    async def overview(self) -> dict[str, Any]:
        backlog = await self.store.backlog()
        return {"connectors": [self.connector_json(c, backlog) for c in self.connectors],
                "forwarder": await self._forwarder_state()}

    async def control(self, connector: BaseConnector, action: str) -> None:
        """``pause`` | ``resume`` | ``restart`` one connector (pauses are persisted)."""
        if action == "pause":
            await self.store.set_paused(connector.name, True)
            connector.pause()
        elif action == "resume":
            await self.store.set_paused(connector.name, False)
            connector.resume()
        elif action == "restart":
            intake = connector.intake
            await connector.stop()
            await connector.start(intake)
            if connector.name in await self.store.paused():
                connector.pause()
        else:
            raise ValueError(action)
        log.info("connector %s: %s by an operator", connector.name, action,
                 extra={"connector": connector.name})

    async def replay(self, letter_id: str) -> dict[str, Any] | None:
        """Send a dead letter through its path again; returns the updated entry, or None.

        A connector's dead letter is re-parsed by that connector; a record the sink refused
        is validated again and re-published to ``complaints.v1``. The outcome is recorded on
        the entry (``replay_result``); exact dedup makes a second replay harmless. Raises
        ``StoreUnavailable``/``BrokerUnavailable`` (retriable: nothing recorded).
        """
        found = await self.outbox.dead_letter_entry(letter_id)
        if found is None:
            return None
        entry, payload = found
        try:
            if entry["source"] == "sink":
                result = await self._replay_record(payload)
            else:
                result = await self._replay_message(str(entry["channel"]), payload,
                                                    str(entry["content_type"]))
        except ValidationFailed as exc:
            result = f"failed: {exc}"
        except StoreUnavailable:
            raise
        except LaporError as exc:
            if exc.retriable:
                raise
            result = f"failed: {exc}"
        await self.outbox.mark_replayed(letter_id, result)
        log.info("dead letter %s replayed: %s", letter_id, result.split(":")[0],
                 extra={"connector": entry["channel"]})
        again = await self.outbox.dead_letter_entry(letter_id)
        return again[0] if again else None

    async def _replay_message(self, channel: str, payload: bytes, content_type: str) -> str:
        # A connector keeps what it cannot tell the channel of under its own name (Meta: an
        # unparseable body is neither "messenger" nor "instagram" yet).
        connector = next((c for c in self.connectors
                          if channel in c.channels or channel == c.name), None)
        if connector is None:
            raise ValidationFailed(f"no running connector for channel {channel}")
        result = await connector.replay(payload, content_type)
        if result is None:
            return "ignored: not a complaint"
        kind = "duplicate" if result.duplicate else "accepted"
        return f"{kind} {result.tracking_code}"

    async def _replay_record(self, payload: bytes) -> str:
        try:
            complaint = Complaint.from_json(payload)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ValidationFailed(f"still not a valid complaint: {_first_line(exc)}") from exc
        await self._republish(complaint.id.encode(), payload)
        return f"republished {complaint.tracking_code}"

    async def dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        """One dead letter with its raw payload (text when UTF-8, else base64)."""
        found = await self.outbox.dead_letter_entry(letter_id)
        if found is None:
            return None
        entry, payload = found
        try:
            return {**entry, "payload": payload.decode("utf-8"), "payload_encoding": "utf-8"}
        except UnicodeDecodeError:
            return {**entry, "payload": base64.b64encode(payload).decode(),
                    "payload_encoding": "base64"}


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: orjson.dumps(o).decode())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_ok(request: web.Request, token: bytes) -> bool:
    """Whether the request carries ``Authorization: Bearer <ops_token>``."""
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token)


def ops_routes(settings: GatewaySettings,
               ops_of: Callable[[web.Application], OpsService]) -> list[web.AbstractRouteDef]:
    """The JSON API, each route guarded by the bearer token."""
    token = settings.ops_token.get_secret_value().encode() if settings.ops_token else None

    def guarded(handler: Handler) -> Handler:
        async def check(request: web.Request) -> web.StreamResponse:
            if token is None:
                return problem(403, "ops_disabled", detail="set gateway.ops_token to enable")
            if not bearer_ok(request, token):
                return problem(401, "unauthorized", detail="missing or wrong ops token")
            return await handler(request)
        return check

    async def list_connectors(request: web.Request) -> web.StreamResponse:
        return _json(await ops_of(request.app).overview())

    async def one_connector(request: web.Request) -> web.StreamResponse:
        ops = ops_of(request.app)
        connector = ops.find(request.match_info["name"])
        if connector is None:
            return problem(404, "not_found", detail="no such connector")
        return _json(ops.connector_json(connector, await ops.store.backlog()))

    async def control(request: web.Request) -> web.StreamResponse:
        ops = ops_of(request.app)
        connector = ops.find(request.match_info["name"])
        if connector is None:
            return problem(404, "not_found", detail="no such connector")
        await ops.control(connector, request.match_info["action"])
        return _json(ops.connector_json(connector, await ops.store.backlog()))

    async def dead_letters(request: web.Request) -> web.StreamResponse:
        try:
            limit = int(request.query.get("limit", DEAD_LETTERS_LISTED))
        except ValueError:
            return problem(400, "bad_request", detail="limit must be an integer")
        limit = max(1, min(limit, DEAD_LETTERS_MAX))
        return _json({"dead_letters": await ops_of(request.app).outbox.dead_letters(limit)})

    async def dead_letter(request: web.Request) -> web.StreamResponse:
        entry = await ops_of(request.app).dead_letter(request.match_info["id"][:64])
        if entry is None:
            return problem(404, "not_found", detail="no such dead letter")
        return _json(entry)

    async def replay(request: web.Request) -> web.StreamResponse:
        entry = await ops_of(request.app).replay(request.match_info["id"][:64])
        if entry is None:
            return problem(404, "not_found", detail="no such dead letter")
        return _json(entry)

    async def alerts(request: web.Request) -> web.StreamResponse:
        return _json({"alerts": await ops_of(request.app).store.recent_alerts()})

    async def overdue(request: web.Request) -> web.StreamResponse:
        return _json({"overdue": list(await ops_of(request.app).overdue_source(OVERDUE_LISTED))})

    return [
        web.get("/ops/api/connectors", guarded(list_connectors)),
        web.get("/ops/api/connectors/{name}", guarded(one_connector)),
        web.post("/ops/api/connectors/{name}/{action:pause|resume|restart}", guarded(control)),
        web.get("/ops/api/dead-letters", guarded(dead_letters)),
        web.get("/ops/api/dead-letters/{id}", guarded(dead_letter)),
        web.post("/ops/api/dead-letters/{id}/replay", guarded(replay)),
        web.get("/ops/api/alerts", guarded(alerts)),
        web.get("/ops/api/overdue", guarded(overdue)),
    ]
