"""`GatewayIntake`: the :class:`connectors.base.Intake` the connectors call.

normalise → near-duplicate label (fingerprint, durable index, :func:`normalizer.dedup.decide`)
→ exact dedup and durable write (the outbox, one unique key, with the fingerprint) → wake the
publisher. ``submit`` returns only once the complaint is committed.

The fingerprint is indexed in the outbox's group commit, with the complaint (idempotent: a
redelivery indexes it again, which changes nothing). A follow-up (``thread_of``) is neither
labelled nor indexed: it belongs to its thread, not to a cluster.

Normalising and fingerprinting run in the :class:`~gateway.intake_worker.IntakeWorker`'s child
process when one is given and it can answer, else here, with the same result.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.base import IntakeResult
from errors import StoreError, StoreUnavailable
from forwarder.fingerprints import FingerprintIndex, NewFingerprint
from forwarder.outbox import Outbox, now_us
from forwarder.replies import ReplyQueue
from gateway import __version__
from gateway.attachments import AttachmentStore
from gateway.intake_worker import Fingerprinted, IntakeWorker, Prepared
from gateway.lifecycle import Lifecycle, Withdrawal, WithdrawResult, withdraw_text
from gateway.metrics import INTAKE_LATENCY, INTAKE_TOTAL
from gateway.status import StatusService
from gateway.turns import Turns
from normalizer.dedup import apply, decide, fingerprint_of, region_of
from normalizer.ids import complaint_id, parse_tracking_code, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage, sender_key
from normalizer.routing import Router
from normalizer.schema import Attachment, Complaint
from normalizer.similarity import Fingerprint, index_hashes

log = logging.getLogger(__name__)

#: A tracking code as citizens quote it (hyphenated, any case): the hyphen keeps ordinary
#: ten-letter words and numbers from being read as codes.
QUOTED_CODE = re.compile(r"(?<![0-9A-Za-z])[0-9A-Za-z]{5}-[0-9A-Za-z]{5}(?![0-9A-Za-z])")
#: Texts longer than this are fingerprinted in a worker thread: a fingerprint costs about
#: 0.4 ms for a 70-character SMS, 1 ms near 400 characters and 70 ms for a 25,000-character
#: letter (measured on an idle project machine; about 2.7 µs a character), and must not stall
#: the event loop. Shorter ones cost less than the hop to a thread.
FINGERPRINT_INLINE_CHARS = 400


@dataclass(frozen=True, slots=True)
class NearDuplicates:
    """Where near-duplicate candidates come from and how far back to look."""

    index: FingerprintIndex
    window_s: float


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


def _normalize_arguments(cid: str) -> dict[str, str]:
    """What :func:`~normalizer.normalize.normalize` is told besides the message and rules."""
    return {"complaint_id": cid, "tracking_code": tracking_code(cid),
            "gateway_version": __version__, "raw_ref": f"outbox:{cid}"}


class GatewayIntake:
    """Normalise, dedup and make durable."""

    def __init__(self, outbox: Outbox, attachments: AttachmentStore,
                 status: StatusService, replies: ReplyQueue,
                 router: Router | None = None, repeat_window_s: float = 0.0,
                 lifecycle: Lifecycle | None = None,
                 near_duplicates: NearDuplicates | None = None,
                 max_pending: int | None = None, retry_after_s: float = 5.0,
                 worker: IntakeWorker | None = None) -> None:
        self._lifecycle = lifecycle
        self._worker = worker
        self._router = router
        self._near = near_duplicates
        self._backlog = Backlog(outbox, max_pending, retry_after_s) if max_pending else None
        self._retry_after_s = retry_after_s
        self._repeat_window_s = repeat_window_s
        self._outbox = outbox
        self._attachments = attachments
        self._status = status
        self._replies = replies
        self._turns = Turns()

    async def refusal(self) -> StoreUnavailable | None:
        """The refusal new complaints get now (the outbox past its bound, the near-duplicate
        index's band rows not written), or None."""
        if self._backlog is not None and await self._backlog.full():
            return self._backlog.refusal()
        return self._index_refusal()

    def _index_refusal(self) -> StoreUnavailable | None:
        if self._near is not None and self._near.index.behind:
            return StoreUnavailable("near-duplicate index: band rows not written yet",
                                    retry_after=self._retry_after_s)
        return None

    async def submit(self, raw: RawMessage) -> IntakeResult:
        started = time.perf_counter()
        if raw.edit_of is not None:
            revised = await self._revise(raw)
            if revised is not None:
                INTAKE_LATENCY.labels(raw.channel).observe(time.perf_counter() - started)
                return revised
            raw = raw.model_copy(update={"edit_of": None})  # the original is unknown to us
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
        if (refused := self._index_refusal()) is not None:
            INTAKE_TOTAL.labels(raw.channel, "refused_full").inc()
            raise refused
        complaint, found = await self._prepare(raw, cid)
        fingerprint: Fingerprint | None = None
        keys: list[int] = []
        if self._near is not None and complaint.thread_of is None:
            try:
                fingerprint, keys = found or await self._fingerprint(complaint)
                complaint = await self._label(complaint, fingerprint, keys, self._near)
            except StoreError:
                raise  # the outbox shares the store: let the channel retry
            except Exception as exc:  # noqa: BLE001 - a labelling fault never costs a complaint
                log.warning("intake %s near-duplicate check failed for %s (%s); forwarded "
                            "unlabelled", raw.channel, cid, type(exc).__name__)
                fingerprint = None
        indexed = None
        if fingerprint is not None:
            indexed = NewFingerprint(
                complaint.id, complaint.cluster_id or complaint.id,
                int(complaint.received_at.timestamp() * 1_000_000), region_of(complaint),
                complaint.agency, fingerprint, keys)
        added = await self._outbox.add(complaint, raw.raw_payload, raw.raw_content_type,
                                       raw.reply_hints, sender_key(raw),
                                       repeat_window_s=self._repeat_window_s,
                                       fingerprint=indexed)
        own = added.complaint_id == complaint.id  # not a repeat of an earlier complaint
        outcome = "duplicate" if added.duplicate else "accepted"
        if self._backlog is not None and not added.duplicate:
            self._backlog.added()
        INTAKE_TOTAL.labels(raw.channel, outcome).inc()
        INTAKE_LATENCY.labels(raw.channel).observe(time.perf_counter() - started)
        # Ids and codes only: never the citizen's words or contact details.
        log.info("intake %s %s complaint=%s code=%s cluster=%s", raw.channel, outcome,
                 added.complaint_id, added.tracking_code,
                 (complaint.cluster_id if own else None) or "-")
        return IntakeResult(added.complaint_id, added.tracking_code, added.duplicate)

    async def _revise(self, raw: RawMessage) -> IntakeResult | None:
        """Apply an edited message to the complaint it edits; None when that is unknown."""
        assert raw.edit_of is not None
        target = complaint_id(raw.channel, raw.account, raw.edit_of)
        added = await self._outbox.revise(target, self._normalize(raw, target))
        if added is None:
            return None
        outcome = "duplicate" if added.duplicate else "revised"
        INTAKE_TOTAL.labels(raw.channel, outcome).inc()
        log.info("intake %s %s complaint=%s code=%s", raw.channel, outcome, added.complaint_id,
                 added.tracking_code)
        return IntakeResult(added.complaint_id, added.tracking_code, added.duplicate)

    async def _prepare(self, raw: RawMessage, cid: str) -> Prepared:
        """The complaint ``cid`` made of ``raw`` and, when it will be labelled, its
        fingerprint: from the worker process when it can answer, else normalised here (the
        fingerprint is then left to :meth:`_fingerprint`)."""
        if self._worker is not None:
            wanted = self._near is not None and raw.thread_of is None
            done = await self._worker.prepare(raw, _normalize_arguments(cid),
                                              fingerprint=wanted)
            if done is not None:
                return done
        async with self._turns():
            return self._normalize(raw, cid), None

    def _normalize(self, raw: RawMessage, cid: str) -> Complaint:
        """``raw`` as the v1 complaint ``cid``; a refusal is counted as rejected."""
        try:
            return normalize(raw, router=self._router, **_normalize_arguments(cid))
        except Exception:
            INTAKE_TOTAL.labels(raw.channel, "rejected").inc()
            raise

    async def _fingerprint(self, complaint: Complaint) -> Fingerprinted:
        """The complaint's fingerprint and index hashes, computed here: short texts on the
        loop, long ones in a thread."""
        if len(complaint.title) + len(complaint.body) <= FINGERPRINT_INLINE_CHARS:
            async with self._turns():
                found = fingerprint_of(complaint, self._router)
        else:
            found = await asyncio.to_thread(fingerprint_of, complaint, self._router)
        return found, index_hashes(found)

    @staticmethod
    async def _label(complaint: Complaint, fingerprint: Fingerprint, keys: list[int],
                     near: NearDuplicates) -> Complaint:
        """``duplicate_of``/``cluster_id`` from the stored complaints of the window."""
        candidates = await near.index.candidates(keys, now_us() - int(near.window_s * 1_000_000))
        verdict = decide(fingerprint, candidates, region=region_of(complaint),
                         agency=complaint.agency, own_id=complaint.id)
        return apply(complaint, verdict)

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

    async def withdraw(self, *, channel: str, account: str, sender_key: str | None,
                       typed_code: str | None) -> str:
        if self._lifecycle is None:
            return withdraw_text(WithdrawResult(Withdrawal.UNAVAILABLE))
        return withdraw_text(await self._lifecycle.withdraw(
            channel=channel, account=account, sender_key=sender_key, typed_code=typed_code))

    async def load_cursor(self, name: str) -> str | None:
        return await self._outbox.load_cursor(name)

    async def save_cursor(self, name: str, value: str) -> None:
        await self._outbox.save_cursor(name, value)

    async def list_cursors(self, prefix: str) -> dict[str, str]:
        return await self._outbox.list_cursors(prefix)

    async def delete_cursor(self, name: str) -> None:
        await self._outbox.delete_cursor(name)
