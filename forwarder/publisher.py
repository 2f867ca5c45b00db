"""The publisher: moves due outbox entries to ``complaints.v1`` (``acks=all``, key = id).

It wakes when the intake commits new entries and otherwise when the next entry falls due.
Entries Kafka accepted stay leased for the receipt timeout; entries it refused become due again
after a short backoff. Nothing leaves the outbox here: only a receipt does that. Up to
``PIPELINE`` batches are in flight at once (claims are leases, so rounds never overlap).
"""

from __future__ import annotations

import asyncio
import logging

from config.settings import KafkaSettings
from errors import LaporError
from forwarder.kafka import CE_TYPE_COMPLAINT, Producer, Topics, ce_time, cloudevent_headers
from forwarder.outbox import DueEntry, Outbox

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # longest sleep when nothing is due (other instances may add entries)
#: Rounds in flight at once: the next batch is claimed and handed to the producer while Kafka
#: still acknowledges the previous ones (one round at a time left the pipe idle between them).
PIPELINE = 3
FAILURE_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # retry delays after consecutive failed rounds
RECONNECT_AFTER = 3  # failed rounds in a row before the producer is rebuilt


class Publisher:
    """The outbox-to-Kafka loop. ``start``/``stop``; ``stop`` drains for a grace period."""

    def __init__(self, *, outbox: Outbox, producer: Producer, topics: Topics,
                 settings: KafkaSettings, source: str) -> None:
        self._outbox = outbox
        self._producer = producer
        self._topics = topics
        self._settings = settings
        self._source = source
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._pending_tasks: set[asyncio.Task[None]] = set()
        self._reconnecting = asyncio.Lock()
        self.published = 0
        self.failed_rounds = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="publisher")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Finish the current round (bounded by ``grace_s``), then stop."""
        self._stopping.set()
        self._outbox.new_entries.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, grace_s)
            except TimeoutError:
                log.warning("publisher: round still running after %.1fs; left for next start",
                            grace_s)

    def wake(self) -> None:
        """Publish now (e.g. the broker is back)."""
        self._outbox.new_entries.set()

    def republish_now(self) -> None:
        """Make every entry without a receipt due now: the broker lost its log, so leases
        that wait for receipts would only delay recovery."""
        self._pending_tasks.add(task := asyncio.get_running_loop().create_task(self._republish()))
        task.add_done_callback(self._pending_tasks.discard)

    async def _republish(self) -> None:
        try:
            count = await self._outbox.reschedule_pending()
            log.warning("publisher: broker restarted; republishing %d entries", count)
        except LaporError as exc:
            log.warning("publisher: could not reschedule entries: %s", exc)
        self.wake()

    async def _run(self) -> None:
        in_flight: set[asyncio.Task[int]] = set()
        try:
            while not self._stopping.is_set():
                published = await self._next_round(in_flight)
                if published > 0:
                    continue
                await self._idle(published)
        finally:
            try:
                if in_flight:
                    await asyncio.wait(in_flight)
            finally:  # stop() ran out of grace: what is still in flight is left for next start
                for task in in_flight:
                    task.cancel()

    async def _next_round(self, in_flight: set[asyncio.Task[int]]) -> int:
        """Claim a batch and start publishing it; with ``PIPELINE`` rounds in flight, wait for
        one to finish first. Returns the batch size, 0 when nothing was due and every round
        in flight went through, -1 when a round failed."""
        failed = False
        if len(in_flight) >= PIPELINE:
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            failed = any(task.result() < 0 for task in done)
        if not failed:
            try:
                entries = await self._outbox.claim_due(self._settings.publish_batch,
                                                       self._settings.receipt_timeout_s)
            except LaporError as exc:  # store trouble: back off and try again
                self.last_error = str(exc)
                log.warning("publisher: round failed: %s", exc)
                entries, failed = [], True
            if entries:
                task = asyncio.create_task(self._publish(entries), name="publisher-round")
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                return len(entries)
        if in_flight:  # settle what is in flight before sleeping or backing off
            done, _ = await asyncio.wait(in_flight)
            failed = failed or any(task.result() < 0 for task in done)
        return -1 if failed else 0

    async def _idle(self, published: int) -> None:
        """Sleep until new entries are committed, the next one falls due, or (after a failed
        round) the backoff has passed."""
        if published < 0:
            delay = _backoff(self.failed_rounds)
        else:
            due = await self._safe_next_due()
            delay = IDLE_POLL_S if due is None else min(IDLE_POLL_S, due)
        self._outbox.new_entries.clear()
        try:
            await asyncio.wait_for(self._outbox.new_entries.wait(), max(delay, 0.01))
        except TimeoutError:
            pass

    async def _safe_next_due(self) -> float | None:
        try:
            return await self._outbox.next_due_in()
        except LaporError:
            return IDLE_POLL_S

    async def _publish(self, entries: list[DueEntry]) -> int:
        """Send claimed entries and record the outcome; -1 when none was accepted. Store
        trouble while recording is logged and counts as a failed round (the leases run out
        and the entries are claimed again)."""
        try:
            return await self._send(entries)
        except LaporError as exc:
            self.last_error = str(exc)
            log.warning("publisher: round failed: %s", exc)
            return -1

    async def _send(self, entries: list[DueEntry]) -> int:
        if not self._producer.started:
            await self._reconnect()
        now = ce_time()
        records = [
            (e.complaint_id.encode(), e.payload,
             cloudevent_headers(CE_TYPE_COMPLAINT, self._source, ce_id=e.complaint_id,
                                time=now, subject=e.complaint_id))
            for e in entries
        ]
        results = await self._producer.send_many(self._topics.complaints, records)
        ok = [e.complaint_id for e, r in zip(entries, results, strict=True) if r is None]
        failed = [e.complaint_id for e, r in zip(entries, results, strict=True) if r is not None]
        await self._outbox.mark_published(ok)
        self.published += len(ok)
        if failed:
            self.failed_rounds += 1
            error = next(r for r in results if r is not None)
            self.last_error = str(error)
            delay = _backoff(self.failed_rounds)
            await self._outbox.mark_failed(failed, str(error), delay)
            log.warning("publisher: %d of %d entries not accepted by Kafka (%s); retry in %.1fs",
                        len(failed), len(entries), error, delay)
            if self.failed_rounds >= RECONNECT_AFTER:
                await self._reconnect()
            return len(ok) if ok else -1
        self.failed_rounds = 0
        return len(ok)

    async def _reconnect(self) -> None:
        if self._reconnecting.locked():
            return  # another round is at it already
        async with self._reconnecting:
            await self._restart_producer()

    async def _restart_producer(self) -> None:
        try:
            await self._producer.restart()
            log.info("publisher: producer reconnected")
        except LaporError as exc:
            self.last_error = str(exc)
            log.warning("publisher: producer reconnect failed: %s", exc)


def _backoff(failures: int) -> float:
    return FAILURE_BACKOFF_S[min(max(failures, 1), len(FAILURE_BACKOFF_S)) - 1]
