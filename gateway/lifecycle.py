"""The complaint lifecycle at the gateway: status notices for citizens, the agency status API,
withdrawal by the reporter, and the SLA alert loop of the sink role.

Status changes reach the central store on ``complaints.status.v1`` (see
:mod:`forwarder.status_events`); the sink turns each applied change into a status notice on the
receipts topic, and :meth:`gateway.replies.ReplyLoop.on_status` owes the citizen
:func:`notice_text` once per event id. Every path that *creates* a status change here (the
agency API, a withdrawal) only publishes an event on the topic: the sink is the one writer of
the status, so exactly-once holds the same way for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.settings import ApiSettings
from connectors.api import match_key, problem
from errors import BrokerUnavailable, LaporError
from forwarder.kafka import Producer, cloudevent_headers, send_acked
from forwarder.outbox import Outbox, now_us
from forwarder.status_events import FINAL, Status, StatusEvent, status_record
from forwarder.store import CentralStore, Overdue
from normalizer.ids import parse_tracking_code

log = logging.getLogger(__name__)

WITHDRAW_ACTOR = "pelapor"  # the actor of a withdrawal by the reporter
WITHDRAW_NOTE = "ditarik pelapor"
ANSWER_LIMIT = 1000  # characters of an agency's answer sent on a channel; the rest on the page
CE_TYPE_SLA_ALERT = "id.go.lapor.sla_overdue.v1"
ALERT_BATCH = 500  # overdue complaints alerted per check (the rest at the next check)
#: What an agency system may set through the API (verification and forwarding are the
#: central admins'; closing follows the 10-day rule or the admin).
AGENCY_STATUSES = frozenset({Status.IN_FOLLOW_UP, Status.ANSWERED, Status.REJECTED})


def notice_text(notice: dict[str, str | None], public_url: str | None) -> str | None:
    """What the citizen is told of a status change (Bahasa Indonesia), or None for nothing.

    Never the content of the complaint: only its code, the new status, the agency and the
    agency's answer (meant for the reporter).
    """
    code = notice.get("tracking_code") or ""
    agency = notice.get("agency") or "instansi terkait"
    status = notice.get("status")
    if status == Status.WITHDRAWN and notice.get("actor") == WITHDRAW_ACTOR:
        return None  # the reporter was answered when they withdrew it
    if status == Status.VERIFIED:
        text = f"Laporan {code} telah diverifikasi oleh admin SP4N-LAPOR!."
    elif status == Status.FORWARDED:
        text = f"Laporan {code} telah diteruskan ke {agency} untuk ditindaklanjuti."
    elif status == Status.IN_FOLLOW_UP:
        text = f"Laporan {code} sedang ditindaklanjuti oleh {agency}."
    elif status == Status.ANSWERED:
        answer = (notice.get("answer") or "").strip()
        if len(answer) > ANSWER_LIMIT:
            answer = answer[:ANSWER_LIMIT].rsplit(" ", 1)[0] + " ..."
        text = f"Laporan {code} mendapat tanggapan dari {agency}" + \
            (f": {answer}" if answer else ".")
    elif status == Status.CLOSED:
        text = f"Laporan {code} telah selesai. Terima kasih atas laporan Anda."
    elif status == Status.REJECTED:
        note = (notice.get("note") or "").strip()
        text = f"Laporan {code} tidak dapat ditindaklanjuti" + (f": {note}" if note else ".")
    elif status == Status.WITHDRAWN:
        text = f"Laporan {code} telah ditarik."
    else:
        return None
    where = f" atau buka {public_url.rstrip('/')}/status/{code}" if public_url else ""
    return f"{text} Cek status: kirim STATUS {code}{where}."


class Withdrawal(StrEnum):
    """What became of a withdrawal request."""

    WITHDRAWN = "withdrawn"  # the withdrawn event is published
    NOT_FOUND = "not_found"  # no such code (or none recent from this sender)
    NOT_YOURS = "not_yours"  # another reporter's complaint: refused, nothing revealed
    TOO_LATE = "too_late"  # outside the window
    FINAL = "final"  # already closed, rejected or withdrawn
    PENDING = "pending"  # not in the central store yet: try again in a moment
    UNAVAILABLE = "unavailable"  # the broker did not take the event: try again later


@dataclass(frozen=True, slots=True)
class WithdrawResult:
    outcome: Withdrawal
    tracking_code: str | None = None


class Lifecycle:
    """Publishes status events created at the gateway (agency API, withdrawals)."""

    def __init__(self, *, outbox: Outbox, store: CentralStore, producer: Producer, topic: str,
                 source: str, withdraw_window_s: float) -> None:
        self._outbox = outbox
        self._store = store
        self._producer = producer
        self._topic = topic
        self._source = source
        self._window_s = withdraw_window_s

    async def publish(self, event: StatusEvent, complaint_id: str) -> None:
        """Put ``event`` on the status topic (acknowledged); raises ``BrokerUnavailable``."""
        await send_acked(self._producer, self._topic,
                         [status_record(event, complaint_id, self._source)])

    async def withdraw(self, *, channel: str, account: str, sender_key: str | None,
                       typed_code: str | None) -> WithdrawResult:
        """Withdraw a complaint for its reporter: same channel, account and sender as the
        complaint, within ``withdraw_window_s`` of sending it, not final yet. Without a code,
        the sender's newest complaint in the window. Repeating it is harmless (the event id
        is derived from the complaint)."""
        if not sender_key or self._window_s <= 0:
            return WithdrawResult(Withdrawal.NOT_FOUND)
        if typed_code:
            code = parse_tracking_code(typed_code)
        else:
            recent = await self._outbox.recent_from(channel, account, sender_key, self._window_s)
            code = recent.tracking_code if recent else None
        reporter = await self._outbox.reporter(code) if code else None
        if reporter is None:
            return WithdrawResult(Withdrawal.NOT_FOUND)
        if (reporter.channel, reporter.account, reporter.sender_key) != \
                (channel, account, sender_key):
            log.info("withdrawal of complaint=%s refused: another sender", reporter.complaint_id)
            return WithdrawResult(Withdrawal.NOT_YOURS)
        code = reporter.tracking_code
        if (now_us() - reporter.created_us) / 1_000_000 > self._window_s:
            return WithdrawResult(Withdrawal.TOO_LATE, code)
        stored = await self._store.find(code)
        if stored is None:
            return WithdrawResult(Withdrawal.PENDING, code)
        if stored.status in FINAL:
            return WithdrawResult(Withdrawal.FINAL, code)
        event = StatusEvent(event_id=f"withdraw-{reporter.complaint_id}", tracking_code=code,
                            status=Status.WITHDRAWN, at=datetime.now(UTC),
                            actor=WITHDRAW_ACTOR, note=WITHDRAW_NOTE)
        try:
            await self.publish(event, reporter.complaint_id)
        except LaporError as exc:
            log.warning("withdrawal of complaint=%s not published: %s", reporter.complaint_id,
                        exc)
            return WithdrawResult(Withdrawal.UNAVAILABLE, code)
        log.info("complaint=%s withdrawn by its reporter", reporter.complaint_id)
        return WithdrawResult(Withdrawal.WITHDRAWN, code)


def withdraw_text(result: WithdrawResult) -> str:
    """The answer to ``/batal`` or ``BATAL KODE`` (Bahasa Indonesia)."""
    code = result.tracking_code or ""
    return {
        Withdrawal.WITHDRAWN: f"Laporan {code} telah ditarik atas permintaan Anda.",
        Withdrawal.NOT_FOUND: "Tidak ada laporan Anda yang dapat ditarik. Tulis kode "
                              "pelacakannya, misalnya: BATAL ABCDE-12345.",
        Withdrawal.NOT_YOURS: "Laporan hanya dapat ditarik oleh pelapornya sendiri, dari akun "
                              "yang sama dengan saat melapor.",
        Withdrawal.TOO_LATE: f"Laporan {code} sudah tidak dapat ditarik sendiri karena batas "
                             "waktunya terlewati. Hubungi admin SP4N-LAPOR! bila perlu.",
        Withdrawal.FINAL: f"Laporan {code} sudah selesai diproses sehingga tidak dapat ditarik.",
        Withdrawal.PENDING: f"Laporan {code} masih diteruskan ke sistem pusat. Silakan coba "
                            "lagi beberapa saat lagi.",
        Withdrawal.UNAVAILABLE: "Maaf, permintaan belum dapat diproses. Silakan coba lagi "
                                "beberapa saat lagi.",
    }[result.outcome]


# --------------------------------------------------------------------------- agency API


class AgencyStatus(BaseModel):
    """The body of ``POST /api/v1/complaints/{code}/status``."""

    model_config = ConfigDict(extra="forbid")

    status: Status
    event_id: str | None = Field(None, min_length=1, max_length=100, description=(
        "The agency system's id of this change: a retried POST with the same id is one "
        "change. Default: the Idempotency-Key header, else a new id."))
    at: datetime | None = None
    actor: str | None = Field(None, min_length=1, max_length=200)
    note: str | None = Field(None, max_length=2000)
    answer: str | None = Field(None, max_length=10000)


class AgencyKeys:
    """Agency API keys, compared in constant time over all keys."""

    def __init__(self, settings: ApiSettings) -> None:
        self._keys = [(agency, key.get_secret_value().encode())
                      for agency, key in settings.agency_keys.items()]

    def agency(self, request: web.Request) -> str | None:
        """The agency whose key the request carries, or None."""
        return match_key(request, self._keys)


def agency_status_route(keys: AgencyKeys, lifecycle: web.AppKey[Lifecycle],
                        store: web.AppKey[CentralStore]) -> web.RouteDef:
    """``POST /api/v1/complaints/{code}/status`` for agency systems.

    401 without or with a wrong key; 404 unknown code; 403 when the complaint is not routed to
    the key's agency; 409 when its status is final; 422 for an invalid body or a status
    agencies may not set; 503 when the
    broker did not take the event (retry with the same ``event_id``); 202 once the event is
    on the status topic (the sink applies it and the citizen is told).
    """

    async def handler(request: web.Request) -> web.Response:
        agency = keys.agency(request)
        if agency is None:
            return problem(401, "unauthorized", detail="missing or wrong agency API key")
        typed = request.match_info["code"][:40]
        code = parse_tracking_code(typed)
        stored = await request.app[store].find(code) if code else None
        if stored is None:
            return problem(404, "not_found", detail="no complaint with this tracking code")
        if request.content_type != "application/json":
            return problem(415, "unsupported_media_type", detail="send application/json")
        try:
            body = AgencyStatus.model_validate_json(await request.read())
        except ValidationError as exc:
            fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"]
                      for e in exc.errors()}
            return problem(422, "validation_failed", fields=fields)
        if stored.agency != agency:
            return problem(403, "forbidden", detail="this complaint is not routed to your agency")
        if stored.status in FINAL:
            return problem(409, "final", current_status=stored.status,
                           detail="the complaint is closed; its status no longer changes")
        if body.status not in AGENCY_STATUSES:
            return problem(422, "validation_failed", fields={
                "status": f"agencies may set {', '.join(sorted(AGENCY_STATUSES))}"})
        event_id = body.event_id or request.headers.get("Idempotency-Key") or uuid.uuid4().hex
        try:
            event = StatusEvent(event_id=f"{agency}:{event_id}"[:100],
                                complaint_id=stored.complaint_id, status=body.status,
                                at=body.at or datetime.now(UTC),
                                actor=body.actor or f"agency:{agency}", agency=agency,
                                note=body.note, answer=body.answer)
        except ValidationError as exc:
            fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"]
                      for e in exc.errors()}
            return problem(422, "validation_failed", fields=fields)
        try:
            await request.app[lifecycle].publish(event, stored.complaint_id)
        except BrokerUnavailable:
            return web.json_response({"error": "unavailable", "detail": "not recorded; retry"},
                                     status=503, headers={"Retry-After": "5"})
        return web.json_response({"event_id": event.event_id,
                                  "tracking_code": stored.tracking_code,
                                  "status": event.status.value}, status=202)

    return web.post("/api/v1/complaints/{code}/status", handler)


# --------------------------------------------------------------------------- SLA alerts


class SlaAlerts:
    """The sink role's periodic overdue check: each overdue complaint and stage is published
    once on ``complaints.alerts.v1``: recorded in ``sla_alerts`` after the broker acknowledged
    it (CloudEvents id ``<complaint id>:<stage>``, so a consumer can drop the rare repeat after
    a crash between publishing and recording)."""

    def __init__(self, *, store: CentralStore, producer: Producer, topic: str, source: str,
                 interval_s: float) -> None:
        self._store = store
        self._producer = producer
        self._topic = topic
        self._source = source
        self._interval_s = interval_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sla-alerts")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def check(self, now: datetime | None = None) -> list[Overdue]:
        """Publish the alerts not published yet; return them."""
        pending = await self._store.overdue(ALERT_BATCH, now, unalerted=True)
        if not pending:
            return []
        await send_acked(self._producer, self._topic, [
            (o.complaint_id.encode(),
             orjson.dumps({"complaint_id": o.complaint_id, "tracking_code": o.tracking_code,
                           "stage": o.stage, "due_at": o.due_at, "status": o.status,
                           "agency": o.agency, "channel": o.channel}),
             cloudevent_headers(CE_TYPE_SLA_ALERT, self._source,
                                ce_id=f"{o.complaint_id}:{o.stage}", subject=o.complaint_id))
            for o in pending])
        await self._store.mark_alerted(pending)
        self.published += len(pending)
        log.warning("sla: %d complaint stage(s) newly overdue", len(pending))
        return pending

    async def _run(self) -> None:
        try:  # complaints stored before the lifecycle existed get their clocks first
            while not self._stopping.is_set() and await self._store.backfill_due_dates():
                pass
        except LaporError as exc:
            log.warning("sla: due dates not backfilled: %s", exc)
        while not self._stopping.is_set():
            try:
                await self.check()
            except LaporError as exc:
                log.warning("sla: overdue check failed: %s", exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            except TimeoutError:
                pass
