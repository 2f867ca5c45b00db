"""The fingerprint worker process: the same fingerprints as in process, and never in the way:
a killed, hung or idle child costs no complaint and no label, and comes back."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.fingerprint_worker import Fingerprinted, FingerprintWorker
from normalizer.similarity import fingerprint, index_hashes
from tests.integration.support import wait_for
from tests.integration.test_dedup import (
    LAMP_SMS,
    LAMP_WA,
    LAMP_WEB,
    ROUTER,
    gateway,
    message,
    stored,
)

TEXTS = [LAMP_WEB, LAMP_SMS, LAMP_WA, "?", "Jalan berlubang 🙏🙏 di Gg. Mawar RT 03 RW 07 😡",
         "Pelayanan KTP di kantor kecamatan Sungai Kunjang lambat. " * 120]


@pytest.fixture
async def worker() -> AsyncIterator[FingerprintWorker]:
    started = FingerprintWorker(ROUTER, timeout_s=1.0, restart_after_s=0.2)
    yield started
    await started.aclose()


async def answered(worker: FingerprintWorker, text: str = LAMP_WEB) -> Fingerprinted:
    """The child's answer for ``text``, once a child is ready."""
    return await wait_for(lambda: worker.fingerprint(text), within=60,
                          what="the fingerprint worker to answer")


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


async def test_the_worker_fingerprints_exactly_as_the_gateway_does(
        worker: FingerprintWorker) -> None:
    assert await worker.fingerprint(LAMP_WEB) is None  # starting: the caller works in process
    await answered(worker)
    for text in TEXTS:
        found = await worker.fingerprint(text)
        expected = fingerprint(text, ROUTER)
        assert found == (expected, index_hashes(expected)), text[:40]


async def test_a_killed_worker_costs_no_complaint_and_comes_back(
        worker: FingerprintWorker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.fingerprint_worker")
    async with gateway(f"sqlite:///{tmp_path}/lapor.db", tmp_path, worker=worker) as (
            intake, db):
        first = await intake.submit(message("webform", "w1", LAMP_WEB, "web-1"))
        await answered(worker)
        killed = worker.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        sms = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        assert (await stored(db, sms.complaint_id)).duplicate_of == first.complaint_id
        await wait_for(lambda: _async(gone(killed)), within=10, what="the killed child reaped")
        assert f"fingerprint worker pid {killed} stopped: it exited (exit code -9)" in caplog.text

        await answered(worker)  # started again at a later complaint
        assert worker.pid not in (None, killed)
        wa = await intake.submit(message("whatsapp", "wa1", LAMP_WA, "6281234500002"))
        assert (await stored(db, wa.complaint_id)).cluster_id == first.complaint_id


async def test_a_hung_worker_is_killed_at_its_deadline(worker: FingerprintWorker) -> None:
    await answered(worker)
    hung = worker.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    assert await worker.fingerprint(LAMP_SMS) is None  # after timeout_s, not never
    await wait_for(lambda: _async(gone(hung)), within=10, what="the hung child killed")
    found = await answered(worker, LAMP_SMS)
    assert worker.pid != hung and found[0] == fingerprint(LAMP_SMS, ROUTER)


async def test_an_idle_worker_stops_and_starts_again() -> None:
    worker = FingerprintWorker(ROUTER, idle_s=0.4, restart_after_s=0.0)
    try:
        await answered(worker)
        first = worker.pid
        assert first is not None
        await wait_for(lambda: _async(worker.pid is None and gone(first)), within=10,
                       what="the idle child stopped")
        await answered(worker)
        assert worker.pid not in (None, first)
    finally:
        await worker.aclose()


async def test_closing_stops_the_worker_and_starts_no_other(worker: FingerprintWorker) -> None:
    await answered(worker)
    pid = worker.pid
    assert pid is not None
    await worker.aclose()
    assert gone(pid) and worker.pid is None
    assert await worker.fingerprint(LAMP_WEB) is None
    assert worker.pid is None


async def _async(value: bool) -> bool:
    return value
