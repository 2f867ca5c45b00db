"""A resilient consumer-group loop: read a batch, handle it, commit, and start over on failure.

Subclasses implement :meth:`ConsumerLoop.handle`. Offsets are committed only after ``handle``
returned, so a crash between the two re-delivers the batch (at-least-once); handlers are
idempotent. Any error (broker gone, commit refused, handler failure) tears the consumer down and
builds a new one after a backoff: the new one resumes from the committed offsets, or from the
earliest record when the broker has lost them. :meth:`request_restart` does the same on demand,
e.g. after the embedded broker was restarted with an empty log.

A batch during which a restart was requested is not committed: it was read from a log the
broker may have lost, and its offsets, committed to the broker that replaced it, would point
past the new log's end. The embedded broker (tansu) answers a fetch there with no records
rather than ``OFFSET_OUT_OF_RANGE``, so ``auto_offset_reset`` would never apply and the
partition would stall until its new log grew past the offset.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from errors import LaporError

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500  # how long one getmany waits; bounds how fast stop() is noticed
MAX_RECORDS = 500  # records per batch handed to handle() (default)
RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # successive waits before rebuilding


class ConsumerLoop(ABC):
    """One consumer group member running ``handle`` over batches until stopped."""

    def __init__(self, *, bootstrap: str, topic: str, group: str, name: str,
                 max_records: int = MAX_RECORDS) -> None:
        self._bootstrap = bootstrap
        self._max_records = max_records
        self._topic = topic
        self._group = group
        self.name = name
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._restart = asyncio.Event()
        self._handling = False
        self.handled = 0
        self.last_error: str | None = None

    @abstractmethod
    async def handle(self, records: list[ConsumerRecord]) -> None:
        """Process one batch. Called from the loop's task; raising restarts the consumer and
        re-delivers the batch."""

    async def start(self) -> None:
        """Start the loop's task (returns at once; connecting happens in the task)."""
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Signal the loop, let the current batch finish, close the consumer."""
        self._stopping.set()
        if self._task is None:
            return
        if not self._handling:
            self._task.cancel()  # waiting for records or the broker: nothing to finish
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._task.cancelled():
                raise

    def request_restart(self) -> None:
        """Rebuild the consumer at the next opportunity (e.g. the broker lost its state)."""
        self._restart.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                self._topic,
                bootstrap_servers=self._bootstrap,
                group_id=self._group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self._max_records,
            )
            self._restart.clear()
            try:
                await consumer.start()
                await self._consume(consumer)
                failures = 0
            except (KafkaError, LaporError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: consumer failed, rebuilding: %s", self.name, self.last_error)
                failures += 1
            finally:
                try:
                    await consumer.stop()
                except KafkaError as exc:
                    log.debug("%s: consumer stop failed: %s", self.name, exc)
            if failures and not self._stopping.is_set():
                delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S)) - 1]
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except TimeoutError:
                    pass

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping.is_set() and not self._restart.is_set():
            batches: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
                timeout_ms=POLL_TIMEOUT_MS, max_records=self._max_records
            )
            records = [record for batch in batches.values() for record in batch]
            if not records:
                continue
            self._handling = True
            try:
                await self.handle(records)
                if self._restart.is_set():
                    # The broker was replaced meanwhile: these offsets belong to its lost log.
                    log.info("%s: restart requested; batch handled, offsets not committed",
                             self.name)
                    return
                offsets: dict[Any, int] = {tp: batch[-1].offset + 1
                                           for tp, batch in batches.items()}
                await consumer.commit(offsets)
            finally:
                self._handling = False
            self.handled += len(records)
