"""The publisher: moves due outbox entries to ``complaints.v1`` (``acks=all``, key = id).

It wakes when the intake commits new entries and otherwise when the next entry falls due.
New entries come handed over by the outbox, already leased (:meth:`forwarder.outbox.Outbox
.hand_over`); the table is claimed from every ``DUE_POLL_S`` (entries due again, other
instances'), and round after round while it holds a backlog. Entries Kafka accepted stay
leased for the receipt timeout; entries it refused become due again after a short backoff.
Nothing leaves the outbox here: only a receipt does that.
"""

from __future__ import annotations

import asyncio
import logging
import time

from config.settings import KafkaSettings
from errors import LaporError
from forwarder.kafka import CE_TYPE_COMPLAINT, Producer, Topics, ce_time, cloudevent_headers
from forwarder.outbox import DueEntry, Outbox

log = logging.getLogger(__name__)

IDLE_POLL_S = 1.0  # longest sleep when nothing is due (other instances may add entries)
#: Retry delays after consecutive failed rounds: at most a second, so the backlog moves within
#: a second of the broker's return (a frozen broker's requests time out anyway, at
#: ``kafka.request_timeout_ms``; a refused connection costs one attempt a second).
FAILURE_BACKOFF_S = (0.2, 0.5, 1.0)
LOG_EVERY_FAILURE = 10  # past the first, every this many failed rounds is logged as a warning
RECONNECT_AFTER = 3  # failed rounds in a row before the producer is rebuilt
MAX_ROUNDS_IN_FLIGHT = 3  # claimed batches waiting for Kafka's acks at once (backlog only)
DUE_POLL_S = 1.0  # longest time between claims from the table while new entries keep coming


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
        self._unmarked: list[str] = []  # accepted by Kafka, recorded with the next claim
        self._claimed_at = 0.0  # time.monotonic() of the last claim from the table
        self._table_drained = False  # that claim found less than a full batch due
        self.published = 0
        self.failed_rounds = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        self._outbox.hand_over(self._settings.receipt_timeout_s)
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
        self._outbox.hand_over(None)
        try:
            await self._outbox.release_fresh()
        except LaporError as exc:  # their leases bring them back
            log.warning("publisher: could not release the entries handed over: %s", exc)

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
        rounds: set[asyncio.Task[int]] = set()
        try:
            while not self._stopping.is_set():
                published = await self._pipelined_rounds(rounds)
                if self.failed_rounds >= RECONNECT_AFTER:
                    await self._reconnect()  # no round in flight: nothing is cut off
                if published > 0:
                    continue
                self._outbox.new_entries.clear()  # from here on a commit ends the wait below
                if published < 0:
                    delay = _backoff(self.failed_rounds)
                else:
                    if self._outbox.has_fresh:  # committed while the round ended
                        continue
                    due = await self._safe_next_due()
                    delay = max(IDLE_POLL_S if due is None else min(IDLE_POLL_S, due),
                                self._table_wait())
                try:
                    await asyncio.wait_for(self._outbox.new_entries.wait(), max(delay, 0.01))
                except TimeoutError:
                    pass
            await self._flush_marks()
        finally:
            self._outbox.hand_over(None)  # whatever ended the loop: new entries wait in the table
            for task in rounds:  # stop() gave up waiting: the leases bring them back
                task.cancel()

    async def _pipelined_rounds(self, rounds: set[asyncio.Task[int]]) -> int:
        """Publish rounds until one claims less than a full batch; while full batches come
        (a backlog), the next is claimed while earlier ones wait for Kafka's acks (the
        producer fills its next request meanwhile), at most :data:`MAX_ROUNDS_IN_FLIGHT`.
        Returns how many Kafka accepted, -1 when a round failed as a whole (once every round
        has finished). ``rounds`` holds the rounds in flight (for the caller to cancel)."""
        outcomes: list[int] = []
        claim_failed = False
        while not self._stopping.is_set():
            try:
                entries = await self._claim()
            except LaporError as exc:  # store trouble: back off and try again
                self.last_error = str(exc)
                log.warning("publisher: round failed: %s", exc)
                claim_failed = True
                break
            if not entries:
                break
            rounds.add(asyncio.create_task(self._publish(entries)))
            if len(entries) < self._settings.publish_batch:
                break
            if len(rounds) >= MAX_ROUNDS_IN_FLIGHT:
                await asyncio.wait(rounds, return_when=asyncio.FIRST_COMPLETED)
            _collect(rounds, outcomes)
            if any(outcome < 0 for outcome in outcomes):
                break  # Kafka refuses: no more claims until every round is back
        if rounds:
            await asyncio.wait(rounds)
            _collect(rounds, outcomes)
        if claim_failed or any(outcome < 0 for outcome in outcomes):
            return -1
        return sum(outcomes)

    async def _safe_next_due(self) -> float | None:
        try:
            return await self._outbox.next_due_in()
        except LaporError:
            return IDLE_POLL_S

    async def publish_round(self) -> int:
        """Publish one batch of due entries. Returns how many Kafka accepted, -1 when the round
        failed as a whole."""
        entries = await self._claim()
        if not entries:
            return 0
        published = await self._publish(entries)
        if published < 0 and self.failed_rounds >= RECONNECT_AFTER:
            await self._reconnect()
        return published

    def _table_wait(self) -> float:
        """Seconds until the table is claimed from again: at once while it holds a backlog,
        else ``DUE_POLL_S`` after the last claim (new entries come handed over)."""
        if not self._table_drained:
            return 0.0
        return max(0.0, DUE_POLL_S - (time.monotonic() - self._claimed_at))

    async def _claim(self) -> list[DueEntry]:
        """The next batch: entries handed over, and what is due in the table when
        :meth:`_table_wait` says so."""
        limit = self._settings.publish_batch
        if self._table_wait() > 0:  # what Kafka accepted waits for that claim (or idle)
            return self._outbox.take_fresh(limit)
        # Half the batch at most for new entries, so neither starves the other.
        fresh = self._outbox.take_fresh(limit // 2)
        marks, self._unmarked = self._unmarked, []
        try:
            due = await self._outbox.claim_due(limit - len(fresh),
                                               self._settings.receipt_timeout_s, marks)
        except BaseException:
            self._unmarked = marks + self._unmarked  # recorded with a later claim
            if fresh:
                return fresh  # the claim's error comes back with the next one
            raise
        self._claimed_at = time.monotonic()
        self._table_drained = len(due) < limit - len(fresh)
        return fresh + due + self._outbox.take_fresh(limit - len(fresh) - len(due))

    async def _flush_marks(self) -> None:
        """Record what Kafka accepted that no claim has recorded yet (when stopping; else the
        next claim from the table, within about ``DUE_POLL_S``, records it)."""
        if not self._unmarked:
            return
        marks, self._unmarked = self._unmarked, []
        try:
            await self._outbox.mark_published(marks)
        except LaporError as exc:  # informational only: the receipts decide delivery
            log.warning("publisher: could not record %d published entries: %s",
                        len(marks), exc)

    async def _publish(self, entries: list[DueEntry]) -> int:
        """Send claimed entries and record the outcome: how many Kafka accepted, -1 when none
        was. Store trouble while recording counts as a failed round (the leases republish)."""
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
        self._unmarked.extend(ok)  # recorded with the next claim, in its transaction
        self.published += len(ok)
        if failed:
            self.failed_rounds += 1
            error = next(r for r in results if r is not None)
            self.last_error = str(error)
            delay = _backoff(self.failed_rounds)
            await self._outbox.mark_failed(failed, str(error), delay)
            log.log(self._failure_level(), "publisher: %d of %d entries not accepted by Kafka "
                    "(%s); retry in %.1fs (failed rounds in a row: %d)", len(failed),
                    len(entries), error, delay, self.failed_rounds)
            return len(ok) if ok else -1
        self.failed_rounds = 0
        return len(ok)

    async def _reconnect(self) -> None:
        try:
            await self._producer.restart()
            log.info("publisher: producer reconnected")
        except LaporError as exc:
            self.last_error = str(exc)
            log.log(self._failure_level(), "publisher: producer reconnect failed: %s", exc)

    def _failure_level(self) -> int:
        """WARNING for the first failed round and every :data:`LOG_EVERY_FAILURE`th, DEBUG
        between (an outage retried every second would otherwise log every second)."""
        rounds = self.failed_rounds
        return logging.WARNING if rounds <= 1 or rounds % LOG_EVERY_FAILURE == 0 \
            else logging.DEBUG


def _collect(rounds: set[asyncio.Task[int]], outcomes: list[int]) -> None:
    """Move the outcomes of finished rounds from ``rounds`` to ``outcomes``."""
    for task in [t for t in rounds if t.done()]:
        rounds.discard(task)
        outcomes.append(task.result())


def _backoff(failures: int) -> float:
    return FAILURE_BACKOFF_S[min(max(failures, 1), len(FAILURE_BACKOFF_S)) - 1]
