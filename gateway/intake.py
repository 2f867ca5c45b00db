"""`GatewayIntake`: the :class:`connectors.base.Intake` the connectors call.

normalise → exact dedup and durable write (the outbox, one unique key) → wake the publisher.
``submit`` returns only once the complaint is committed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping

from connectors.base import IntakeResult
from errors import StoreUnavailable
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from gateway import __version__
from gateway.attachments import AttachmentStore
from gateway.metrics import INTAKE_LATENCY, INTAKE_TOTAL
from gateway.status import StatusService
from normalizer.ids import complaint_id, parse_tracking_code, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage, sender_key
from normalizer.routing import Router
from normalizer.schema import Attachment

log = logging.getLogger(__name__)

#: A tracking code as citizens quote it (hyphenated, any case): the hyphen keeps ordinary
#: ten-letter words and numbers from being read as codes.
QUOTED_CODE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Za-z]{5}-[0-9A-Za-z]{5}(?![0-9A-Za-z])")


class Backlog:
    """Back-pressure: is the outbox holding more undelivered entries than ``max_pending``?

    The pending count is read from the outbox at most every ``REFRESH_S`` and counted up
    locally in between, so the check costs one query a second, not one per complaint. When
    Kafka is unreachable the outbox absorbs complaints up to the bound; past it intake refuses
    with ``StoreUnavailable`` (503 + Retry-After: channels redeliver, pull connectors retry)
    instead of growing without end.
    """

    REFRESH_S = 1.0

    def __init__(self, outbox: Outbox, max_pending: int, retry_after_s: float) -> None:
        self._outbox = outbox
        self._max = max_pending
        self._retry_after_s = retry_after_s
        self._pending = 0
        self._read_at = -self.REFRESH_S
        self._lock = asyncio.Lock()

    async def full(self) -> bool:
        """Whether new complaints must be refused now."""
        if time.monotonic() - self._read_at >= self.REFRESH_S:
            async with self._lock:
                if time.monotonic() - self._read_at >= self.REFRESH_S:
                    self._pending = (await self._outbox.depth())[0]
                    self._read_at = time.monotonic()
        return self._pending >= self._max

    def added(self) -> None:
        """A new entry was committed."""
        self._pending += 1

    def refusal(self) -> StoreUnavailable:
        return StoreUnavailable(f"outbox holds {self._pending} undelivered entries "
                                f"(bound {self._max})", retry_after=self._retry_after_s)


class GatewayIntake:
    """Normalise, dedup and make durable."""

    def __init__(self, outbox: Outbox, attachments: AttachmentStore,
                 status: StatusService, replies: ReplyQueue,
                 router: Router | None = None, repeat_window_s: float = 0.0,
                 max_pending: int | None = None, retry_after_s: float = 5.0) -> None:
        self._router = router
        self._backlog = Backlog(outbox, max_pending, retry_after_s) if max_pending else None
        self._repeat_window_s = repeat_window_s
        self._outbox = outbox
        self._attachments = attachments
        self._status = status
        self._replies = replies

    async def submit(self, raw: RawMessage) -> IntakeResult:
        started = time.perf_counter()
        cid = complaint_id(raw.channel, raw.account, raw.native_id)
        if raw.thread_of is None:
            quoted = await self._quoted_complaint(raw, cid)
            if quoted is not None:  # "about my report K7M2Q-9XD4T: ..." is a follow-up
                raw = raw.model_copy(update={"thread_of": quoted})
        if self._backlog is not None and await self._backlog.full():
            known = await self._outbox.find(tracking_code(cid))
            if known is not None and known.complaint_id == cid:  # a redelivery: answer it
                INTAKE_TOTAL.labels(raw.channel, "duplicate").inc()
                return IntakeResult(cid, known.tracking_code, True)
            INTAKE_TOTAL.labels(raw.channel, "refused_full").inc()
            raise self._backlog.refusal()
        try:
            complaint = normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                                  gateway_version=__version__, raw_ref=f"outbox:{cid}",
                                  router=self._router)
        except Exception:
            INTAKE_TOTAL.labels(raw.channel, "rejected").inc()
            raise
        added = await self._outbox.add(complaint, raw.raw_payload, raw.raw_content_type,
                                       raw.reply_hints, sender_key(raw),
                                       repeat_window_s=self._repeat_window_s)
        outcome = "duplicate" if added.duplicate else "accepted"
        if self._backlog is not None and not added.duplicate:
            self._backlog.added()
        INTAKE_TOTAL.labels(raw.channel, outcome).inc()
        INTAKE_LATENCY.labels(raw.channel).observe(time.perf_counter() - started)
        # Ids and codes only: never the citizen's words or contact details.
        log.info("intake %s %s complaint=%s code=%s", raw.channel, outcome, added.complaint_id,
                 added.tracking_code)
        return IntakeResult(added.complaint_id, added.tracking_code, added.duplicate)

    async def _quoted_complaint(self, raw: RawMessage, own_id: str) -> str | None:
        """The complaint whose tracking code the message quotes (title or text), if any."""
        for match in QUOTED_CODE.finditer(f"{raw.title or ''}\n{raw.text}"):
            code = parse_tracking_code(match.group(0))
            entry = await self._outbox.find(code) if code else None
            if entry is not None and entry.complaint_id != own_id:
                return entry.complaint_id
        return None

    async def store_attachment(self, *, name: str, declared_type: str | None,
                               data: bytes) -> Attachment:
        return await self._attachments.store(name=name, declared_type=declared_type, data=data)

    async def recent_complaint(self, *, channel: str, account: str, sender_key: str,
                               within_s: float) -> IntakeResult | None:
        found = await self._outbox.recent_from(channel, account, sender_key, within_s)
        return IntakeResult(found.complaint_id, found.tracking_code, True) if found else None

    async def dead_letter(self, *, channel: str, account: str, reason: str, payload: bytes,
                          content_type: str) -> str:
        letter = await self._outbox.dead_letter(channel, account, reason, payload, content_type)
        INTAKE_TOTAL.labels(channel, "dead_letter").inc()
        log.warning("intake %s dead letter %s: %s", channel, letter, reason)
        return letter

    async def record_delivery(self, *, channel: str, provider_id: str, state: str,
                              at: float | None = None, error: str | None = None) -> None:
        at_us = int(at * 1_000_000) if at is not None else None
        await self._replies.record_delivery(channel, provider_id, state, at_us, error)

    async def public_status(self, typed_code: str) -> Mapping[str, object] | None:
        view = await self._status.find(typed_code)
        return view.public_json() if view else None

    async def load_cursor(self, name: str) -> str | None:
        return await self._outbox.load_cursor(name)

    async def save_cursor(self, name: str, value: str) -> None:
        await self._outbox.save_cursor(name, value)

    async def list_cursors(self, prefix: str) -> dict[str, str]:
        return await self._outbox.list_cursors(prefix)

    async def delete_cursor(self, name: str) -> None:
        await self._outbox.delete_cursor(name)
