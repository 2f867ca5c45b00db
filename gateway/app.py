"""The aiohttp application: wires the store, the broker, the forwarder and the connectors.

Roles: ``gateway`` (HTTP intake, connectors, publisher, receipt reader, reply loop) and
``sink`` (the central store's consumers of complaints and status changes, and the SLA alert
check). ``lapor-gateway run`` uses both, plus the embedded broker when
``kafka.bootstrap_servers = "embedded"``. Every resource is an async context in
``cleanup_ctx``, so shutdown runs in reverse order: connectors stop taking messages, the
publisher drains, consumers finish their batch, the producer flushes, the broker and the
database close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import timedelta, timezone
from enum import StrEnum
from typing import Any

import jinja2
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config.settings import Settings
from connectors.api import ApiConnector, problem
from connectors.base import BaseConnector
from connectors.email import EmailConnector
from connectors.meta import MetaConnector
from connectors.meta_webhook import GraphWebhookConnector
from connectors.sms import SmsConnector
from connectors.telegram import TelegramConnector
from connectors.webform import CsrfGuard, Render, WebformConnector
from connectors.whatsapp import WhatsAppConnector
from connectors.x import XConnector
from errors import LaporError, StoreUnavailable
from forwarder.bands import BandWriter
from forwarder.broker import EmbeddedBroker
from forwarder.db import Database, open_database
from forwarder.fingerprints import FingerprintIndex
from forwarder.inbox import Inbox
from forwarder.kafka import CE_TYPE_COMPLAINT, Producer, Topics, cloudevent_headers, ensure_topics
from forwarder.outbox import Outbox
from forwarder.publisher import Publisher
from forwarder.receipts import ReceiptReader
from forwarder.replies import ReplyQueue
from forwarder.sink import Sink
from forwarder.sla import WorkingCalendar
from forwarder.status_events import StatusSink
from forwarder.store import CentralStore
from gateway import __version__
from gateway.alerts import ALERT_TOPIC, AlertEvaluator, AlertSink, Observation, WebhookSink
from gateway.attachments import AttachmentStore
from gateway.intake import GatewayIntake, NearDuplicates
from gateway.intake_worker import IntakeWorker
from gateway.lifecycle import AgencyKeys, Lifecycle, SlaAlerts, agency_status_route
from gateway.metrics import (
    ALERTS_OPEN,
    BROKER_RESTARTS,
    CONNECTOR_BACKLOG,
    CONSUMER_LAG,
    DEAD_LETTERS,
    OPS_COLLECTOR,
    OUTBOX_AGE,
    OUTBOX_DEPTH,
    PUBLISHED,
    SINK_DEAD_LETTERS,
    SINK_RECORDS,
    SLA_OVERDUE,
    STORE_WRITES,
)
from gateway.metrics import RECEIPTS as RECEIPTS_DELIVERED
from gateway.metrics import (
    REPLIES as REPLIES_BY_STATE,
)
from gateway.ops import OpsService, OverdueSource, ops_routes
from gateway.ops_dashboard import dashboard_routes
from gateway.ops_dlq import DeadLetterReader
from gateway.ops_kafka import InstrumentedProducer, KafkaAlertSink, LagProbe
from gateway.ops_store import OpsStore, Throughput
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
INBOX = web.AppKey("inbox", Inbox)
BANDS = web.AppKey("bands", BandWriter)
STORE = web.AppKey("store", CentralStore)
STATUS = web.AppKey("status", StatusService)
PUBLISHER = web.AppKey("publisher", Publisher)
RECEIPTS = web.AppKey("receipts", ReceiptReader)
SINK = web.AppKey("sink", Sink)
STATUS_SINK = web.AppKey("status_sink", StatusSink)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
REPLIES = web.AppKey("replies", ReplyLoop)
REPLY_QUEUE = web.AppKey("reply_queue", ReplyQueue)
ROUTER = web.AppKey("router", Router)
CONNECTORS: web.AppKey[list[BaseConnector]] = web.AppKey("connectors")
RENDER: web.AppKey[Render] = web.AppKey("render")
OPS = web.AppKey("ops", OpsService)
ALERTS = web.AppKey("alerts", AlertEvaluator)
DLQ_READER = web.AppKey("dlq_reader", DeadLetterReader)
#: The lifecycle's overdue complaints for the dashboard and ``lapor_sla_overdue`` (set it to
#: ``CentralStore.overdue`` to wire it in; nothing is overdue until then).

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
        app.router.add_routes([agency_status_route(AgencyKeys(settings.connectors.api),
                                                   LIFECYCLE, STORE)])
        app.router.add_routes(ops_routes(settings.gateway, lambda a: a[OPS]))
        app.router.add_routes(dashboard_routes(settings.gateway, render, lambda a: a[OPS]))
        # Connectors start first and stop last; the reply loop needs them running.
        app.cleanup_ctx.append(_connectors_ctx)
        app.cleanup_ctx.append(_forwarding)
        app.cleanup_ctx.append(_operations)
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
    if conf.email.enabled:
        connectors.append(EmailConnector(conf.email))
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
    producer = InstrumentedProducer(settings.kafka, bootstrap)
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
    settings = app[SETTINGS]
    db = app[DATABASE]
    # The inbox has its own writer (on SQLite its own file): a burst of webhooks is kept
    # without waiting on the intake's and the forwarder's transactions.
    inbox_db = await db.sibling("inbox")
    # Near-duplicate band rows: on SQLite their own file and writer, after the group commit.
    bands_db = await db.sibling("lsh", searched=True) if settings.dedup.enabled else db
    try:
        async with contextlib.AsyncExitStack() as stack:
            if bands_db is not db:
                app[BANDS] = await stack.enter_async_context(
                    BandWriter(bands_db, db, settings.dedup.window_days * 86400))
            outbox = await stack.enter_async_context(
                Outbox(db, bands=app[BANDS].put if BANDS in app else None))
            inbox = await stack.enter_async_context(Inbox(
                inbox_db, max_pending=settings.gateway.outbox_max_pending,
                retry_after_s=settings.gateway.retry_after_s))
            app[OUTBOX] = outbox
            app[INBOX] = inbox
            lifecycle = settings.lifecycle
            app[STORE] = CentralStore(db, WorkingCalendar.build(
                lifecycle.extra_holidays,
                timezone(timedelta(hours=lifecycle.utc_offset_hours))))
            app[LIFECYCLE] = Lifecycle(
                outbox=outbox, store=app[STORE], producer=app[PRODUCER],
                topic=Topics.from_settings(settings.kafka).status,
                source=f"lapor-gateway/{instance_name(settings)}",
                withdraw_window_s=lifecycle.withdraw_window_s)
            app[STATUS] = StatusService(app[STORE], outbox)
            app[REPLY_QUEUE] = ReplyQueue(db)
            yield
    finally:
        for sibling in {inbox_db, bands_db} - {db}:
            await sibling.close()


async def _sink(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    topics = Topics.from_settings(settings.kafka)
    source = f"lapor-gateway/sink/{instance_name(settings)}"
    sink = Sink(bootstrap=app[BOOTSTRAP], group=settings.kafka.sink_group, topics=topics,
                store=app[STORE], producer=app[PRODUCER], source=source)
    # Status changes: their own group, so a backlog of complaints never delays them.
    status_sink = StatusSink(bootstrap=app[BOOTSTRAP], topic=topics.status,
                             group=f"{settings.kafka.sink_group}-status", store=app[STORE],
                             producer=app[PRODUCER], receipts_topic=topics.receipts,
                             dlq_topic=topics.dlq, source=source)
    alerts = SlaAlerts(store=app[STORE], producer=app[PRODUCER], topic=topics.alerts,
                       source=source, interval_s=settings.lifecycle.sla_check_interval_s)
    app[SINK] = sink
    app[STATUS_SINK] = status_sink
    if BROKER in app:
        app[BROKER].on_restart.append(sink.request_restart)
        app[BROKER].on_restart.append(status_sink.request_restart)
    await sink.start()
    await status_sink.start()
    await alerts.start()
    yield
    await alerts.stop()
    await status_sink.stop()
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
                             on_delivered=replies.on_delivered, on_status=replies.on_status)
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
    near_duplicates = None
    if settings.dedup.enabled:
        index = FingerprintIndex(app[DATABASE], per_key=settings.dedup.candidates_per_key,
                                 limit=settings.dedup.max_candidates, bands=app.get(BANDS))
        app[OUTBOX].on_indexed(index.remember)
        near_duplicates = NearDuplicates(index, settings.dedup.window_days * 86400)
    worker = IntakeWorker(app[ROUTER], idle_s=settings.gateway.intake_worker_idle_s) \
        if settings.gateway.intake_worker else None
    intake = GatewayIntake(
        app[OUTBOX],
        AttachmentStore(settings.gateway.data_dir / "attachments",
                        settings.gateway.max_attachment_bytes),
        app[STATUS],
        app[REPLY_QUEUE],
        app[ROUTER],
        repeat_window_s=settings.gateway.repeat_window_s,
        lifecycle=app[LIFECYCLE],
        near_duplicates=near_duplicates,
        max_pending=settings.gateway.outbox_max_pending,
        retry_after_s=settings.gateway.retry_after_s,
        worker=worker,
    )
    app[INBOX].admission = intake.refusal
    connectors = app[CONNECTORS]
    for connector in connectors:
        if isinstance(connector, GraphWebhookConnector) and connector.settings.inbox:
            connector.use_inbox(app[INBOX])
        await connector.start(intake)
    yield
    for connector in reversed(connectors):
        await connector.stop()
    if worker is not None:
        await worker.aclose()


async def _operations(app: web.Application) -> AsyncIterator[None]:
    """The ops service (persisted pauses applied), the dead-letter topic's reader, throughput
    sampling and the alert evaluator."""
    settings = app[SETTINGS]
    topics = Topics.from_settings(settings.kafka)
    producer = app[PRODUCER]
    source = f"lapor-gateway/{instance_name(settings)}"

    async def republish(key: bytes, value: bytes) -> None:
        headers = cloudevent_headers(CE_TYPE_COMPLAINT, source, subject=key.decode())
        [error] = await producer.send_many(topics.complaints, [(key, value, headers)])
        if error is not None:
            raise error

    async def state() -> dict[str, Any]:
        return await forwarder_state(app)

    store = OpsStore(app[DATABASE])
    connectors: list[BaseConnector] = app[CONNECTORS]
    ops = OpsService(connectors=connectors, outbox=app[OUTBOX], store=store,
                     throughput=Throughput(), forwarder_state=state, republish=republish,
                     overdue=_overdue_source(app[STORE]), worker=instance_name(settings))
    app[OPS] = ops
    OPS_COLLECTOR.connectors = lambda: list(connectors)
    await ops.apply_persisted_pauses()
    reader = DeadLetterReader(bootstrap=app[BOOTSTRAP], topic=topics.dlq,
                              group=f"{settings.kafka.receipts_group}-dlq", outbox=app[OUTBOX])
    app[DLQ_READER] = reader
    if BROKER in app:
        app[BROKER].on_restart.append(reader.request_restart)
    alert_topic = settings.kafka.topic_prefix + ALERT_TOPIC
    try:
        await ensure_topics(app[BOOTSTRAP], [alert_topic], settings.kafka.partitions)
    except LaporError as exc:
        log.warning("could not check or create the alert topic (%s)", exc)
    sinks: list[AlertSink] = [KafkaAlertSink(producer, alert_topic, source)]
    if settings.ops.alert_webhook_url:
        sinks.append(WebhookSink(settings.ops.alert_webhook_url))

    async def observe() -> Observation:
        depth, age = await app[OUTBOX].depth()
        return Observation(
            now=time.time(),
            connectors={c.name: (c.health().state.value, c.health().last_error)
                        for c in connectors},
            arrivals=await store.arrivals({ch for c in connectors for ch in c.channels},
                                          settings.ops.silent_history),
            outbox_age_s=age if depth else 0.0,
            dead_letters=await app[OUTBOX].dead_letter_count(),
        )

    evaluator = AlertEvaluator(settings.ops, observe, store, sinks, clock=time.time)
    app[ALERTS] = evaluator
    stopping = asyncio.Event()

    probe = LagProbe(app[BOOTSTRAP], {settings.kafka.sink_group: topics.complaints,
                                      settings.kafka.receipts_group: topics.receipts,
                                      reader.group: topics.dlq})

    async def sample() -> None:
        while not stopping.is_set():
            ops.sample()
            for group, lag in (await probe.refresh()).items():
                CONSUMER_LAG.labels(group).set(lag)
            if probe.last_error:
                log.debug("consumer lag not measured: %s", probe.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), settings.ops.sample_interval_s)

    sampler = asyncio.create_task(sample(), name="ops-sampler")
    await reader.start()
    await evaluator.start()
    yield
    stopping.set()
    sampler.cancel()  # a lag probe in flight is abandoned, not awaited
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    await evaluator.stop()
    await reader.stop()


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
        state["inbox"] = {"pending": await app[INBOX].depth()}
        state["publisher_last_error"] = app[PUBLISHER].last_error
    if BANDS in app:  # near-duplicate band rows not written to their file yet
        state["lsh_bands"] = {"unwritten": app[BANDS].unwritten}
    if BROKER in app:
        state["embedded_broker"] = {"pid": app[BROKER].pid, "restarts": app[BROKER].restarts}
    return state


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


def _overdue_source(store: CentralStore) -> OverdueSource:
    """The ops dashboard's overdue panel, read from the central store's SLA clocks."""

    async def overdue(limit: int) -> list[dict[str, Any]]:
        return [asdict(item) for item in await store.overdue(limit)]

    return overdue


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    app = request.app
    if PUBLISHER in app:
        depth, age = await app[OUTBOX].depth()
        OUTBOX_DEPTH.set(depth)
        OUTBOX_AGE.set(age)
        PUBLISHED.set(app[PUBLISHER].published)
        RECEIPTS_DELIVERED.set(app[RECEIPTS].delivered)
    if OPS in app:
        ops = app[OPS]
        DEAD_LETTERS.set(await app[OUTBOX].dead_letter_count())
        ALERTS_OPEN.set(len(await ops.store.open_alerts()))
        for state, count in (await ops.store.replies_by_state()).items():
            REPLIES_BY_STATE.labels(state).set(count)
        backlog = await ops.store.backlog()
        for connector in ops.connectors:
            CONNECTOR_BACKLOG.labels(connector.name).set(
                sum(backlog.get(ch, 0) for ch in connector.channels))
    if SINK in app:
        SINK_RECORDS.set(app[SINK].handled)
        STORE_WRITES.set(app[SINK].handled - app[SINK].dead_lettered)
        SINK_DEAD_LETTERS.set(app[SINK].dead_lettered + app[STATUS_SINK].dead_lettered)
    if BROKER in app:
        BROKER_RESTARTS.set(app[BROKER].restarts)
    for stage, count in (await app[STORE].overdue_counts()).items():
        SLA_OVERDUE.labels(stage).set(count)
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

