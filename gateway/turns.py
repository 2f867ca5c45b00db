"""`Turns`: CPU-bound steps on the event loop take turns with everything else.

Handlers that become ready together (a group commit answering 32 complaints at once) run back
to back in one pass of the event loop; if each then spent half a millisecond normalising and
fingerprinting, a webhook arriving meanwhile would wait for all of them. A step run in a turn
holds the turn until the loop's next pass, so at most one such step runs per pass and the
server's reads and answers interleave with them. Throughput is unchanged: the steps share one
thread either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Turns:
    """``async with turns():`` around a CPU-bound step (no awaits inside)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        async with self._lock:
            yield
            # Keep the turn until the next pass: a step arriving in this pass waits for it.
            await asyncio.sleep(0)
