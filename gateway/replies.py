"""The reply loop: tells each citizen their tracking code on the channel they wrote from.

Receipts from the central store (the complaint is stored) enqueue an ``ack`` reply in the
durable queue, inside the receipt batch, before its offsets are committed. The loop sends due
replies through the channel's connector (:meth:`BaseConnector.send_reply`): a retriable error
(429, 5xx, network) is retried with backoff (``retry_after`` honoured) until
``MAX_ATTEMPTS`` or ``GIVE_UP_AFTER_S``; a permanent one marks the reply failed. Either way the
state is visible per complaint.

Status notices (a status change applied by the sink, see :mod:`forwarder.status_events`) are
owed the same way, as kind ``status:<event_id>``: the queue's unique key makes a redelivered
notice, or one received again after a gateway restart, one message. When the channel refuses
a message for good (e.g. WhatsApp outside the 24-hour window without a template, a blocked
bot), the same text is owed once on another contact channel of the reporter (SMS to their
phone, e-mail), when such a connector runs: kind ``<kind>>sms``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.base import BaseConnector, ReplyTarget
from errors import LaporError
from forwarder.outbox import now_us
from forwarder.receipts import Receipt, StatusNotice
from forwarder.replies import ReplyJob, ReplyQueue
from gateway.lifecycle import notice_text
from normalizer.schema import Complaint

log = logging.getLogger(__name__)

ACK = "ack"
STATUS_KIND = "status:"  # + the event id: one notification per status event
FALLBACK_MARK = ">"  # kind of a fallback reply: "<kind>><channel>"
BATCH = 50  # replies claimed per round
LEASE_S = 60.0  # a send in flight longer than this is tried again by whoever claims it
IDLE_POLL_S = 1.0  # longest wait when nothing is due
MAX_ATTEMPTS = 12  # then the reply is marked failed (operators see it)
GIVE_UP_AFTER_S = 24 * 3600.0  # an acknowledgement a day late is no longer useful
BACKOFF_S = (2.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(frozen=True, slots=True)
class Sent:
    """A reply the channel accepted, with its id for the channel's later delivery reports."""

    provider_id: str | None


def ack_text(tracking_code: str, public_url: str | None) -> str:
    """The acknowledgement in Bahasa Indonesia: the code and how to ask for the status."""
    where = f" atau buka {public_url.rstrip('/')}/status/{tracking_code}" if public_url else ""
    return (
        f"Terima kasih, laporan Anda sudah kami terima. Kode pelacakan: {tracking_code}. "
        f"Untuk menanyakan perkembangan, kirim: STATUS {tracking_code}{where}."
    )


class ReplyLoop:
    """Enqueues acknowledgements on receipts and sends what is due."""

    def __init__(self, queue: ReplyQueue, connectors: list[BaseConnector],
                 public_url: str | None) -> None:
        self._queue = queue
        self._public_url = public_url
        self._by_channel: dict[str, BaseConnector] = {
            channel: connector for connector in connectors if connector.replies
            for channel in connector.channels
        }
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    @property
    def channels(self) -> Mapping[str, BaseConnector]:
        return self._by_channel

    async def on_delivered(self, receipts: list[Receipt]) -> None:
        """Called by the receipt reader for each batch, before it commits its offsets."""
        owed = [(receipt["id"], ACK, channel, ack_text(receipt["tracking_code"], self._public_url))
                for receipt in receipts
                if (channel := receipt.get("channel")) is not None and channel in self._by_channel
                and not receipt.get("thread_of")]  # a follow-up: the citizen has the code
        if owed and await self._queue.enqueue_many(owed):
            self._wake.set()

    async def on_status(self, notices: list[StatusNotice]) -> None:
        """Called by the receipt reader with status notices, before it commits its offsets:
        each becomes a durable reply (once per event id)."""
        owed = False
        for notice in notices:
            channel, cid, event_id = notice.get("channel"), notice.get("id"), \
                notice.get("event_id")
            if channel not in self._by_channel or not cid or not event_id:
                continue
            body = notice_text(notice, self._public_url)
            if body is not None:
                owed |= await self._queue.enqueue(cid, STATUS_KIND + event_id, channel, body)
        if owed:
            self._wake.set()

    async def start(self) -> None:
        if self._by_channel:
            self._task = asyncio.create_task(self._run(), name="reply-loop")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                jobs = await self._queue.claim_due(BATCH, LEASE_S)
            except LaporError as exc:
                log.warning("replies: cannot read the queue: %s", exc)
                jobs = []
            if jobs:
                sent: list[tuple[str, str, str | None]] = []
                for job, outcome in zip(jobs, await asyncio.gather(
                        *(self._send(job) for job in jobs), return_exceptions=True),
                        strict=True):
                    if isinstance(outcome, BaseException):  # the lease retries it later
                        log.error("replies: %s for complaint=%s not recorded: %s: %s",
                                  job.kind, job.complaint_id, type(outcome).__name__, outcome)
                    elif outcome is not None:
                        sent.append((job.complaint_id, job.kind, outcome.provider_id))
                await self._record_sent(sent)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), IDLE_POLL_S)
            except TimeoutError:
                pass

    async def _send(self, job: ReplyJob) -> Sent | None:
        """Send one reply; what was sent (recorded by the caller with the round's others), or
        None when the attempt failed (recorded here)."""
        connector = self._by_channel.get(job.channel)
        if connector is None:
            await self._queue.mark_failed(job.complaint_id, job.kind,
                                          f"no connector sends on {job.channel}")
            return None
        try:
            provider_id = await connector.send_reply(_target(job), job.body)
        except LaporError as exc:
            await self._failed_attempt(job, exc)
            return None
        except Exception as exc:  # a connector bug must not stop the loop
            log.exception("replies: %s connector crashed sending for %s", job.channel,
                          job.complaint_id)
            await self._failed_attempt(job, exc)
            return None
        log.info("replies: %s sent on %s for complaint=%s", job.kind, job.channel,
                 job.complaint_id)
        return Sent(provider_id)

    async def _record_sent(self, sent: list[tuple[str, str, str | None]]) -> None:
        """One statement for a round's sent replies. When it fails, their leases run out and
        they are sent again (at least once, never lost)."""
        if not sent:
            return
        try:
            await self._queue.mark_sent_many(sent)
        except LaporError as exc:
            log.error("replies: %d sent replies not recorded (sent again later): %s",
                      len(sent), exc)
            return
        self.sent += len(sent)

    async def _failed_attempt(self, job: ReplyJob, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        too_old = (now_us() - job.created_us) / 1_000_000 > GIVE_UP_AFTER_S
        if not (isinstance(exc, LaporError) and exc.retriable) or \
                job.attempts >= MAX_ATTEMPTS or too_old:
            await self._queue.mark_failed(job.complaint_id, job.kind, error)
            self.failed += 1
            log.warning("replies: gave up on %s for complaint=%s after %d attempt(s): %s",
                        job.kind, job.complaint_id, job.attempts, error)
            await self._fall_back(job)
            return
        delay = exc.retry_after if exc.retry_after is not None else \
            BACKOFF_S[min(job.attempts, len(BACKOFF_S)) - 1] * random.uniform(0.8, 1.2)
        await self._queue.mark_retry(job.complaint_id, job.kind, error, delay)
        log.info("replies: retry %s for complaint=%s in %.1fs: %s", job.kind, job.complaint_id,
                 delay, error)


    async def _fall_back(self, job: ReplyJob) -> None:
        """Owe the refused text once on the reporter's other contact channel, if any."""
        if FALLBACK_MARK in job.kind:
            return
        reporter = Complaint.from_json(job.payload).reporter
        for channel, address in (("sms", reporter.phone), ("email", reporter.email)):
            if address and channel != job.channel and channel in self._by_channel:
                if await self._queue.enqueue(job.complaint_id, job.kind + FALLBACK_MARK + channel,
                                             channel, job.body):
                    log.info("replies: %s for complaint=%s falls back to %s", job.kind,
                             job.complaint_id, channel)
                    self._wake.set()
                return


def _target(job: ReplyJob) -> ReplyTarget:
    complaint = Complaint.from_json(job.payload)
    reporter = complaint.reporter
    if job.channel != complaint.channel:  # a fallback: the reporter's own address there
        address = reporter.phone if job.channel == "sms" else reporter.email
        return ReplyTarget(complaint_id=job.complaint_id, tracking_code=job.tracking_code,
                           channel=job.channel, account="", native_id="", address=address,
                           kind=job.kind)
    address = (job.reply_hints.get("address") or reporter.channel_user_id or reporter.phone
               or reporter.email)
    return ReplyTarget(complaint_id=job.complaint_id, tracking_code=job.tracking_code,
                       channel=job.channel, account=job.account, native_id=job.native_id,
                       address=address, hints=job.reply_hints, kind=job.kind)
