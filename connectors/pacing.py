"""`Pacing`: how much background work may run at once, adapted to how late the event loop is.

Background work (the webhook inbox's worker) shares one event loop with the HTTP server. A
fixed concurrency is wrong both ways: high, its handlers run back to back and a webhook
arriving meanwhile waits behind them; low, a backlog left by a peak drains slowly while the
loop has time to spare. So a probe measures how late a timer fires (the loop's lag: what a
request arriving now would wait) and the limit follows it, additive increase, multiplicative
decrease:

* lag above ``target_s``: the limit halves (never below ``low``);
* lag under half of it: the limit grows by one (never above ``high``);
* ``quiet()`` true (nobody is waiting for an answer: no webhook arrived since the last
  probe): the limit grows by one whatever the lag, which is then the work's own.

:class:`Pacing` is also the gate: ``async with pacing:`` waits until fewer than ``limit``
holders are inside.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

#: How often the probe measures the loop's lag.
PROBE_S = 0.05


class Pacing:
    """An adaptive limit on concurrent holders. Start its probe with :meth:`start`."""

    def __init__(self, *, low: int, high: int, target_s: float, probe_s: float = PROBE_S,
                 quiet: Callable[[], bool] | None = None) -> None:
        if not 1 <= low <= high:
            raise ValueError(f"pacing needs 1 <= low <= high (got {low}, {high})")
        self.low = low
        self.high = high
        self.target_s = target_s
        self.limit = low
        #: The last lag measured, seconds.
        self.lag_s = 0.0
        self._probe_s = probe_s
        self._quiet = quiet
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._probe: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._probe is None:
            self._probe = asyncio.create_task(self._measure(), name="pacing-probe")

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None

    def observe(self, lag_s: float) -> None:
        """Adapt the limit to one measured lag."""
        self.lag_s = lag_s
        in_use = self._active >= self.limit  # only a limit that is in use grows
        if self._quiet is not None and self._quiet():
            if in_use:
                self.limit = min(self.high, self.limit + 1)
        elif lag_s > self.target_s:
            self.limit = max(self.low, self.limit // 2)
        elif lag_s < self.target_s / 2 and in_use:
            self.limit = min(self.high, self.limit + 1)
        self._wake()

    async def _measure(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._probe_s
            await asyncio.sleep(self._probe_s)
            self.observe(max(0.0, loop.time() - due))

    async def __aenter__(self) -> None:
        if self._active < self.limit and not self._waiters:
            self._active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot is handed over by _wake
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, but cancelled before taking it
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        self._active -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._active < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._active += 1
                waiter.set_result(None)
