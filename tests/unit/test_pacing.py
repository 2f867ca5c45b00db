"""Pacing (the inbox worker's adaptive concurrency) and Turns (CPU-bound steps take turns with
the rest of the event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from connectors.pacing import Pacing
from gateway.turns import Turns


async def _hold(pacing: Pacing, inside: list[int], peak: list[int], release: asyncio.Event
                ) -> None:
    async with pacing:
        inside[0] += 1
        peak[0] = max(peak[0], inside[0])
        await release.wait()
        inside[0] -= 1


async def _until(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_the_gate_admits_no_more_than_the_limit() -> None:
    pacing = Pacing(low=3, high=3, target_s=1.0)
    inside, peak, release = [0], [0], asyncio.Event()
    tasks = [asyncio.create_task(_hold(pacing, inside, peak, release)) for _ in range(10)]
    await _until(lambda: inside[0] == 3)
    await asyncio.sleep(0.01)
    assert inside[0] == 3
    release.set()
    await asyncio.gather(*tasks)
    assert peak[0] == 3 and inside[0] == 0


async def test_lag_halves_the_limit_and_a_quiet_loop_grows_it_while_it_is_in_use() -> None:
    pacing = Pacing(low=2, high=16, target_s=0.004)
    inside, peak, release = [0], [0], asyncio.Event()
    tasks = [asyncio.create_task(_hold(pacing, inside, peak, release)) for _ in range(40)]
    await _until(lambda: inside[0] == 2)
    for _ in range(30):  # a quiet loop: the limit grows by one a probe, up to high
        pacing.observe(0.0)
    assert pacing.limit == 16
    await _until(lambda: inside[0] == 16)  # raising the limit admitted the waiters
    pacing.observe(0.050)  # a late loop halves it
    assert pacing.limit == 8
    pacing.observe(0.003)  # between half the target and the target: unchanged
    assert pacing.limit == 8
    for _ in range(10):
        pacing.observe(1.0)
    assert pacing.limit == 2  # never under low
    release.set()
    await asyncio.gather(*tasks)
    assert peak[0] == 16


async def test_an_idle_limit_does_not_grow() -> None:
    pacing = Pacing(low=2, high=16, target_s=0.004)
    for _ in range(10):
        pacing.observe(0.0)
    assert pacing.limit == 2  # a burst starts gently, whatever the quiet before it


async def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    pacing = Pacing(low=1, high=1, target_s=1.0)
    inside, peak, release = [0], [0], asyncio.Event()
    holder = asyncio.create_task(_hold(pacing, inside, peak, release))
    await _until(lambda: inside[0] == 1)
    waiter = asyncio.create_task(_hold(pacing, inside, peak, release))
    await asyncio.sleep(0.01)
    waiter.cancel()
    release.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with pacing:  # the slot is free again
        pass


async def test_the_probe_measures_a_blocked_loop() -> None:
    pacing = Pacing(low=1, high=8, target_s=0.004, probe_s=0.01)
    pacing.start()
    try:
        await asyncio.sleep(0.02)
        _block_the_loop(0.06)  # the probe's timer fires late
        await _until(lambda: pacing.lag_s >= 0.03)
    finally:
        await pacing.stop()


def _block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


def test_pacing_refuses_a_nonsense_range() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        Pacing(low=4, high=2, target_s=0.01)


async def test_turns_run_one_step_per_pass_of_the_loop() -> None:
    turns = Turns()
    passes = 0
    steps_per_pass: dict[int, int] = {}

    async def tick() -> None:
        nonlocal passes
        while True:
            passes += 1
            await asyncio.sleep(0)

    async def step() -> None:
        async with turns():
            steps_per_pass[passes] = steps_per_pass.get(passes, 0) + 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    await asyncio.gather(*(step() for _ in range(20)))
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    assert sum(steps_per_pass.values()) == 20
    assert max(steps_per_pass.values()) == 1  # never two in the same pass


async def test_with_no_webhooks_arriving_the_limit_grows_whatever_the_lag() -> None:
    arrivals = [0]
    seen = [0]

    def quiet() -> bool:
        before, seen[0] = seen[0], arrivals[0]
        return seen[0] == before

    pacing = Pacing(low=2, high=8, target_s=0.001, quiet=quiet)
    inside, peak, release = [0], [0], asyncio.Event()
    tasks = [asyncio.create_task(_hold(pacing, inside, peak, release)) for _ in range(20)]
    await _until(lambda: inside[0] == 2)
    for _ in range(10):
        pacing.observe(0.050)  # the worker's own work makes the loop late; nobody waits
    assert pacing.limit == 8
    arrivals[0] += 1  # a webhook arrived: its answer matters again
    pacing.observe(0.050)
    assert pacing.limit == 4
    release.set()
    await asyncio.gather(*tasks)
