"""The heap trimmer gives the free pages inside the C heap back to the system (glibc)."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import pytest

from gateway.heap import HeapTrimmer
from tests.integration.support import wait_for

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="malloc_trim is a glibc extension")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_free_pages_inside_the_heap_go_back_to_the_system() -> None:
    # 80 MiB of blocks (each above CPython's small-object limit: the C heap), then one kept
    # block above them: freeing the 80 MiB leaves a hole the heap's top cannot shrink past.
    blocks = [bytes(2000) + i.to_bytes(4, "little") for i in range(40_000)]
    kept_on_top = [bytes(2000) + b"top" for _ in range(64)]
    del blocks
    before = rss_mib()
    async with HeapTrimmer(3600) as trimmer:
        assert trimmer.available
        assert await trimmer.trim()
    assert before - rss_mib() > 40, (before, rss_mib())
    assert kept_on_top[0].endswith(b"top")


async def test_it_trims_every_interval_until_closed() -> None:
    async with HeapTrimmer(0.02) as trimmer:
        async def twice() -> bool:
            return trimmer.trims >= 2

        await wait_for(twice, within=5, what="two trims", interval=0.01)
    done = trimmer.trims
    await asyncio.sleep(0.1)
    assert trimmer.trims == done


async def test_zero_never_trims() -> None:
    async with HeapTrimmer(0) as trimmer:
        assert not trimmer.available
        assert not await trimmer.trim()
