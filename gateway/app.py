"""The aiohttp application: wires the store, the broker, the forwarder and the connectors.

Roles: ``gateway`` (HTTP intake, connectors, publisher, receipt reader) and ``sink`` (the
central store's consumer). ``lapor-gateway run`` uses both, plus the embedded broker when
``kafka.bootstrap_servers = "embedded"``. Every resource is an async context in
``cleanup_ctx``, so shutdown runs in reverse order: connectors stop taking messages, the
publisher drains, consumers finish their batch, the producer flushes, the broker and the
database close.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from enum import StrEnum
from typing import Any

import jinja2
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config.settings import Settings
from connectors.api import ApiConnector, problem
from connectors.base import BaseConnector
from connectors.meta import MetaConnector
from connectors.sms import SmsConnector
from connectors.telegram import TelegramConnector
from connectors.webform import CsrfGuard, Render, WebformConnector
from connectors.whatsapp import WhatsAppConnector
from connectors.x import XConnector
from errors import LaporError, StoreUnavailable
from forwarder.broker import EmbeddedBroker
from forwarder.db import Database, open_database
from forwarder.kafka import Producer, Topics, ensure_topics
from forwarder.outbox import Outbox
from forwarder.publisher import Publisher
from forwarder.receipts import ReceiptReader
from forwarder.replies import ReplyQueue
from forwarder.sink import Sink
from forwarder.store import CentralStore
from gateway import __version__
from gateway.attachments import AttachmentStore
from gateway.intake import GatewayIntake
from gateway.metrics import (
    BROKER_RESTARTS,
    OUTBOX_AGE,
    OUTBOX_DEPTH,
    PUBLISHED,
    SINK_DEAD_LETTERS,
    SINK_RECORDS,
)
from gateway.metrics import RECEIPTS as RECEIPTS_DELIVERED
from gateway.ops import ops_routes
from gateway.ratelimit import RateLimits, retry_after_header
from gateway.replies import ReplyLoop
from gateway.security import body_limit_middleware, security_headers_middleware
from gateway.status import StatusService
from normalizer.routing import Router

log = logging.getLogger(__name__)


class Role(StrEnum):
    GATEWAY = "gateway"
    SINK = "sink"


SETTINGS = web.AppKey("settings", Settings)
ROLES: web.AppKey[frozenset[Role]] = web.AppKey("roles")
DATABASE = web.AppKey("database", Database)
BROKER = web.AppKey("broker", EmbeddedBroker)
BOOTSTRAP = web.AppKey("bootstrap", str)
PRODUCER = web.AppKey("producer", Producer)
OUTBOX = web.AppKey("outbox", Outbox)
STORE = web.AppKey("store", CentralStore)
STATUS = web.AppKey("status", StatusService)
PUBLISHER = web.AppKey("publisher", Publisher)
RECEIPTS = web.AppKey("receipts", ReceiptReader)
SINK = web.AppKey("sink", Sink)
REPLIES = web.AppKey("replies", ReplyLoop)
REPLY_QUEUE = web.AppKey("reply_queue", ReplyQueue)
ROUTER = web.AppKey("router", Router)
CONNECTORS: web.AppKey[list[BaseConnector]] = web.AppKey("connectors")
RENDER: web.AppKey[Render] = web.AppKey("render")

SECRET_FILE = "secret_key"  # under data_dir: the CSRF key when gateway.secret_key is unset


def instance_name(settings: Settings) -> str:
    return settings.gateway.instance_id or f"{socket.gethostname()}-{os.getpid()}"


def create_app(settings: Settings, roles: frozenset[Role]) -> web.Application:
    """Build the application for ``roles``; resources start when the app starts."""
    app = web.Application(client_max_size=settings.gateway.max_body_bytes, middlewares=[
        security_headers_middleware(settings.gateway.public_url), _errors_middleware,
        body_limit_middleware(settings.gateway.max_body_bytes),
        RateLimits(settings.gateway).middleware()])
    app[SETTINGS] = settings
    app[ROLES] = roles
    render = _renderer()
    app[RENDER] = render
    app.cleanup_ctx.append(_database)
    if settings.kafka.bootstrap_servers == "embedded":
        app.cleanup_ctx.append(_embedded_broker)
    app.cleanup_ctx.append(_producer)
    app.cleanup_ctx.append(_outbox_and_store)
    if Role.SINK in roles:
        app.cleanup_ctx.append(_sink)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if Role.GATEWAY in roles:
        # The routing rules and gazetteer operators edit, for the intake: loaded once; a bad
        # rule stops start-up. A sink alone never needs them.
        app[ROUTER] = Router.from_files()
        connectors = _connectors(settings, render)
        app[CONNECTORS] = connectors
        for connector in connectors:
            app.router.add_routes(connector.routes())
        app.router.add_get("/status/{code}", status_page)
        app.router.add_get("/status", status_form)
        app.router.add_get("/api/v1/complaints/{code}", status_api)
        app.router.add_routes(ops_routes(settings.gateway, lambda a: a[CONNECTORS],
                                         forwarder_state, _dead_letters))
        # Connectors start first and stop last; the reply loop needs them running.
        app.cleanup_ctx.append(_connectors_ctx)
        app.cleanup_ctx.append(_forwarding)
    return app


def _renderer() -> Render:
    """Render a template from ``gateway/templates`` with autoescaping on."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway", "templates"),
        autoescape=True,
    )

    def render(name: str, context: Mapping[str, Any]) -> str:
        return env.get_template(name).render(**context)

    return render


def _csrf_secret(settings: Settings) -> bytes:
    if settings.gateway.secret_key is not None:
        return settings.gateway.secret_key.get_secret_value().encode()
    path = settings.gateway.data_dir / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def _connectors(settings: Settings, render: Render) -> list[BaseConnector]:
    conf = settings.connectors
    connectors: list[BaseConnector] = []
    if conf.webform.enabled:
        connectors.append(WebformConnector(
            conf.webform, render=render, csrf=CsrfGuard(_csrf_secret(settings)),
            max_body_bytes=settings.gateway.max_body_bytes,
            secure_cookies=(settings.gateway.public_url or "").startswith("https://"),
        ))
    if conf.api.enabled:
        connectors.append(ApiConnector(conf.api, max_body_bytes=settings.gateway.max_body_bytes))
    public_url = settings.gateway.public_url
    if conf.whatsapp.enabled:
        connectors.append(WhatsAppConnector(conf.whatsapp, public_url=public_url))
    if conf.meta.enabled:
        connectors.append(MetaConnector(conf.meta, public_url=public_url))
    if conf.sms.enabled:
        connectors.append(SmsConnector(conf.sms, public_url=public_url))
    if conf.x.enabled:
        connectors.append(XConnector(conf.x, public_url=public_url))
    if conf.telegram.enabled:
        connectors.append(TelegramConnector(conf.telegram, public_url=public_url))
    return connectors


# --------------------------------------------------------------------------- resources


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    db = await open_database(settings.store_url(), pool_size=settings.store.pool_size)
    app[DATABASE] = db
    yield
    await db.close()


async def _embedded_broker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    topics = Topics.from_settings(settings.kafka)
    async with EmbeddedBroker(port=settings.kafka.embedded_port, topics=topics.all(),
                              partitions=settings.kafka.partitions,
                              pid_file=settings.gateway.data_dir / "embedded-broker.pid") as broker:
        app[BROKER] = broker
        app[BOOTSTRAP] = broker.bootstrap
        yield


async def _producer(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    bootstrap = app.get(BOOTSTRAP) or settings.kafka.bootstrap_servers
    app[BOOTSTRAP] = bootstrap
    producer = Producer(settings.kafka, bootstrap)
    try:
        if BROKER not in app:
            await ensure_topics(bootstrap, Topics.from_settings(settings.kafka).all(),
                                settings.kafka.partitions)
    except LaporError as exc:  # topics may be managed by the cluster's operators
        log.warning("could not check or create the topics (%s)", exc)
    try:
        await producer.start()
    except LaporError as exc:  # the outbox keeps complaints; sends start the producer later
        log.warning("Kafka not reachable at start (%s); will keep retrying", exc)
    app[PRODUCER] = producer
    yield
    await producer.stop()


async def _outbox_and_store(app: web.Application) -> AsyncIterator[None]:
    db = app[DATABASE]
    async with Outbox(db) as outbox:
        app[OUTBOX] = outbox
        app[STORE] = CentralStore(db)
        app[STATUS] = StatusService(app[STORE], outbox)
        app[REPLY_QUEUE] = ReplyQueue(db)
        yield


async def _sink(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    sink = Sink(bootstrap=app[BOOTSTRAP], group=settings.kafka.sink_group,
                topics=Topics.from_settings(settings.kafka), store=app[STORE],
                producer=app[PRODUCER], source=f"lapor-gateway/sink/{instance_name(settings)}")
    app[SINK] = sink
    if BROKER in app:
        app[BROKER].on_restart.append(sink.request_restart)
    await sink.start()
    yield
    await sink.stop()


async def _forwarding(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    topics = Topics.from_settings(settings.kafka)
    outbox = app[OUTBOX]
    publisher = Publisher(outbox=outbox, producer=app[PRODUCER], topics=topics,
                          settings=settings.kafka,
                          source=f"lapor-gateway/{instance_name(settings)}")
    replies = ReplyLoop(app[REPLY_QUEUE], app[CONNECTORS], settings.gateway.public_url)
    receipts = ReceiptReader(bootstrap=app[BOOTSTRAP], topic=topics.receipts,
                             group=settings.kafka.receipts_group, outbox=outbox,
                             on_delivered=replies.on_delivered)
    app[PUBLISHER] = publisher
    app[RECEIPTS] = receipts
    app[REPLIES] = replies
    if BROKER in app:
        app[BROKER].on_restart.append(receipts.request_restart)
        app[BROKER].on_restart.append(publisher.republish_now)
    await publisher.start()
    await receipts.start()
    await replies.start()
    yield
    await publisher.stop(settings.gateway.shutdown_grace_s)
    await receipts.stop()
    await replies.stop()


async def _connectors_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    intake = GatewayIntake(
        app[OUTBOX],
        AttachmentStore(settings.gateway.data_dir / "attachments",
                        settings.gateway.max_attachment_bytes),
        app[STATUS],
        app[REPLY_QUEUE],
        app[ROUTER],
        repeat_window_s=settings.gateway.repeat_window_s,
        max_pending=settings.gateway.outbox_max_pending,
        retry_after_s=settings.gateway.retry_after_s,
    )
    connectors = app[CONNECTORS]
    for connector in connectors:
        await connector.start(intake)
    yield
    for connector in reversed(connectors):
        await connector.stop()


# --------------------------------------------------------------------------- handlers


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok", "version": __version__})


async def forwarder_state(app: web.Application) -> dict[str, Any]:
    """Outbox depth and age, the publisher's last error, the broker: for ops and readiness."""
    state: dict[str, Any] = {"kafka": {"bootstrap": app[BOOTSTRAP],
                                       "producer": app[PRODUCER].started}}
    if PUBLISHER in app:
        depth, age = await app[OUTBOX].depth()
        state["outbox"] = {"pending": depth, "oldest_s": round(age, 3)}
        state["publisher_last_error"] = app[PUBLISHER].last_error
    if BROKER in app:
        state["embedded_broker"] = {"pid": app[BROKER].pid, "restarts": app[BROKER].restarts}
    return state


async def _dead_letters(app: web.Application, limit: int) -> list[dict[str, Any]]:
    return await app[OUTBOX].dead_letters(limit)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the durable store answers (Kafka may be down: the outbox absorbs that)."""
    app = request.app
    body: dict[str, object] = {"version": __version__}
    try:
        await app[DATABASE].fetch("SELECT 1")
        body["store"] = "ok"
    except LaporError as exc:
        body["store"] = f"unavailable: {exc}"
        return web.json_response({**body, "status": "unavailable"}, status=503)
    body.update(await forwarder_state(app))
    return web.json_response({**body, "status": "ready"},
                             dumps=lambda o: orjson.dumps(o).decode())


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    app = request.app
    if PUBLISHER in app:
        depth, age = await app[OUTBOX].depth()
        OUTBOX_DEPTH.set(depth)
        OUTBOX_AGE.set(age)
        PUBLISHED.set(app[PUBLISHER].published)
        RECEIPTS_DELIVERED.set(app[RECEIPTS].delivered)
    if SINK in app:
        SINK_RECORDS.set(app[SINK].handled)
        SINK_DEAD_LETTERS.set(app[SINK].dead_lettered)
    if BROKER in app:
        BROKER_RESTARTS.set(app[BROKER].restarts)
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def status_form(request: web.Request) -> web.Response:
    """``/status?kode=...`` (the lookup form on the confirmation page) redirects."""
    code = request.query.get("kode", "").strip()
    if code:
        raise web.HTTPSeeOther(f"/status/{code[:40]}")
    render = request.app[RENDER]
    return web.Response(text=render("status.html", {"view": None, "code": ""}),
                        content_type="text/html")


async def status_page(request: web.Request) -> web.Response:
    """The citizen's status page."""
    typed = request.match_info["code"][:40]
    view = await request.app[STATUS].find(typed)
    render = request.app[RENDER]
    html = render("status.html", {"view": view, "code": typed})
    return web.Response(text=html, content_type="text/html", status=200 if view else 404)


async def status_api(request: web.Request) -> web.Response:
    """``GET /api/v1/complaints/{code}``: the public status as JSON."""
    view = await request.app[STATUS].find(request.match_info["code"][:40])
    if view is None:
        return problem(404, "not_found", detail="no complaint with this tracking code")
    return web.json_response(view.public_json(), dumps=lambda o: orjson.dumps(o).decode())


# --------------------------------------------------------------------------- middlewares

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except StoreUnavailable as exc:
        log.warning("store unavailable during %s %s: %s", request.method, request.path, exc)
        response = problem(503, "unavailable", detail="storage unavailable; retry")
        response.headers["Retry-After"] = retry_after_header(
            exc.retry_after or request.app[SETTINGS].gateway.retry_after_s)
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(500, "internal_error")

