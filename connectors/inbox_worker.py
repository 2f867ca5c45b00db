"""`InboxWorker`: handles the webhook bodies a connector kept in the :class:`forwarder.inbox
.Inbox` before answering, in the background.

Each round leases the connector's oldest bodies, groups them by an order key (the sender: one
citizen's messages are handled in the order they arrived, so a location sent after a text still
joins that complaint), handles the groups concurrently and deletes what was handled.

* The store down (a retriable ``LaporError``): that group stops where it is, its bodies are
  given back and the worker backs off; they are handled again later, in order.
* Anything else is a fault of that one body: it is kept as a dead letter with the raw bytes
  and the reason (``on_error``), so no body can stall the ones behind it.
* A crash leaves the bodies leased; they are leased again once the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from connectors.pacing import Pacing
from errors import LaporError, is_retriable

log = logging.getLogger(__name__)

#: Bodies leased per round.
BATCH = 128
#: Bodies handled at once, adapted between these (:class:`connectors.pacing.Pacing`): more
#: overlap their store round trips (and fill the outbox's group commits), but each costs about
#: a millisecond of CPU on the event loop, so while webhooks arrive the worker keeps the loop's
#: lag under a target and, when they stop, drains the backlog with all it has.
MIN_CONCURRENCY = 2
MAX_CONCURRENCY = 64
#: The lag target while the worker keeps up: the bodies it leases arrived under BEHIND_S ago.
#: Further behind, the target grows in proportion, up to LAG_MAX_S: under a load the worker
#: cannot keep up with at 1 ms, every answer within a millisecond meant a backlog that grew
#: until the inbox's bound and its 503s (``bench/inbox_drain.py --rate 260 --seconds 120``:
#: 137 complaints/s handled while webhooks arrived at a 1 ms target, 163 scaled).
LAG_TARGET_S = 0.001
LAG_MAX_S = 0.005
BEHIND_S = 1.0
#: How long a lease lasts: a body held by a killed process is handled again after this.
LEASE_S = 30.0
#: How often an idle worker looks for bodies another instance kept.
IDLE_POLL_S = 1.0
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)

Handle = Callable[[bytes, datetime], Awaitable[object]]


def lag_target(behind_s: float) -> float:
    """The loop lag the worker may cause when the oldest body it handles arrived ``behind_s``
    seconds ago: LAG_TARGET_S up to BEHIND_S, then in proportion, at most LAG_MAX_S."""
    return min(LAG_MAX_S, max(LAG_TARGET_S, LAG_TARGET_S * behind_s / BEHIND_S))


class Kept(Protocol):
    """One kept body (``forwarder.inbox.Kept``)."""

    @property
    def seq(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    @property
    def received_us(self) -> int: ...


class Inbox(Protocol):
    """Where webhook bodies are kept before they are handled (``forwarder.inbox.Inbox``;
    connectors and the forwarder never import each other, the gateway wires them)."""

    async def put(self, connector: str, body: bytes) -> None:
        """Keep ``body``; return once durable. Raises ``StoreUnavailable``."""
        ...

    async def lease(self, connector: str, limit: int, lease_s: float) -> Sequence[Kept]:
        """Lease up to ``limit`` of the oldest unleased bodies, oldest first."""
        ...

    async def release(self, seqs: list[int]) -> None:
        """Give leased bodies back unhandled."""
        ...

    async def done(self, seqs: list[int]) -> None:
        """Forget handled bodies."""
        ...

    def arrival(self, connector: str) -> asyncio.Event:
        """Set whenever a body for ``connector`` is kept."""
        ...

    @property
    def puts(self) -> int:
        """Puts asked for since start (webhook traffic)."""
        ...


class InboxWorker:
    """Drains ``connector``'s kept bodies through ``handle(body, received_at)``."""

    def __init__(self, inbox: Inbox, connector: str, handle: Handle,
                 order_key: Callable[[bytes], str],
                 on_error: Callable[[bytes, Exception], Awaitable[object]], *,
                 batch: int = BATCH, lease_s: float = LEASE_S,
                 concurrency: tuple[int, int] = (MIN_CONCURRENCY, MAX_CONCURRENCY)) -> None:
        self._inbox = inbox
        self._connector = connector
        self._handle = handle
        self._order_key = order_key
        self._on_error = on_error
        self._batch = batch
        self._lease_s = lease_s
        self._puts_seen = 0
        self.pacing = Pacing(low=concurrency[0], high=concurrency[1], target_s=LAG_TARGET_S,
                             quiet=self._no_webhooks_since)
        self._task: asyncio.Task[None] | None = None
        self._held: list[int] = []
        #: Bodies handled and dead-lettered since start (for tests and the dashboard).
        self.handled = 0
        self.failed = 0

    def _no_webhooks_since(self) -> bool:
        """No webhook arrived since the last call: no answer to keep fast."""
        before, self._puts_seen = self._puts_seen, self._inbox.puts
        return self._puts_seen == before

    def start(self) -> None:
        self.pacing.start()
        self._task = asyncio.create_task(self._run(), name=f"{self._connector}-inbox")

    async def stop(self) -> None:
        """Stop after giving back the bodies leased and not handled yet."""
        await self.pacing.stop()
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        held, self._held = self._held, []
        with contextlib.suppress(LaporError):
            await self._inbox.release(held)

    async def _run(self) -> None:
        failures = 0
        arrival = self._inbox.arrival(self._connector)
        while True:
            arrival.clear()
            try:
                kept = await self._inbox.lease(self._connector, self._batch, self._lease_s)
                if not kept:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(arrival.wait(), IDLE_POLL_S)
                    continue
                self._held = [k.seq for k in kept]
                self.pacing.target_s = lag_target(time.time() - kept[0].received_us / 1e6)
                handled, stopped = await self._round(kept)
                await self._inbox.done(handled)
                if stopped is not None:  # give back what was not handled, then back off
                    finished = set(handled)
                    self._held = [seq for seq in self._held if seq not in finished]
                    raise stopped
                self._held = []
                failures = 0
            except LaporError as exc:
                delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
                failures += 1
                log.warning("%s inbox: %s; retrying in %.1f s", self._connector, exc, delay)
                held, self._held = self._held, []
                with contextlib.suppress(LaporError):
                    await self._inbox.release(held)
                await asyncio.sleep(delay)

    async def _round(self, kept: Sequence[Kept]) -> tuple[list[int], LaporError | None]:
        """Handle ``kept``: the seqs handled (or dead-lettered), and the retriable error that
        stopped a group, if one did."""
        groups: dict[str, list[Kept]] = {}
        for item in kept:
            groups.setdefault(self._order_key(item.body), []).append(item)
        handled: list[int] = []
        stopped: list[LaporError] = []

        async def run(group: list[Kept]) -> None:
            for item in group:
                try:
                    async with self.pacing:
                        await self._handle(item.body,
                                           datetime.fromtimestamp(item.received_us / 1e6, UTC))
                    self.handled += 1
                except Exception as exc:  # noqa: BLE001 - one body never stalls the others
                    if isinstance(exc, LaporError) and is_retriable(exc):
                        stopped.append(exc)
                        return
                    log.error("%s inbox: body %d could not be handled (%s); kept as a dead "
                              "letter", self._connector, item.seq, type(exc).__name__)
                    try:
                        await self._on_error(item.body, exc)
                    except LaporError as dead_exc:
                        stopped.append(dead_exc)
                        return
                    self.failed += 1
                handled.append(item.seq)

        await asyncio.gather(*(run(group) for group in groups.values()))
        return handled, (stopped[0] if stopped else None)
