"""The intake worker process: the same complaints and fingerprints as in process, and never in
the way: a killed, hung or idle child costs no complaint and no label, and comes back."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.intake_worker import IntakeWorker, Prepared
from normalizer.dedup import fingerprint_of
from normalizer.ids import complaint_id, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage
from normalizer.similarity import index_hashes
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
async def worker() -> AsyncIterator[IntakeWorker]:
    started = IntakeWorker(ROUTER, timeout_s=1.0, restart_after_s=0.2)
    yield started
    await started.aclose()


def arguments(raw: RawMessage) -> dict[str, str]:
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    return {"complaint_id": cid, "tracking_code": tracking_code(cid),
            "gateway_version": "test", "raw_ref": f"outbox:{cid}"}


async def answered(worker: IntakeWorker, raw: RawMessage | None = None) -> Prepared:
    """The child's answer for ``raw``, once a child is ready."""
    raw = raw or message("webform", "w0", LAMP_WEB, "web-0")
    return await wait_for(lambda: worker.prepare(raw, arguments(raw), fingerprint=True),
                          within=60, what="the intake worker to answer")


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def holds(value: bool) -> bool:
    return value


async def test_the_worker_prepares_exactly_as_the_gateway_does(worker: IntakeWorker) -> None:
    first = message("webform", "w0", LAMP_WEB, "web-0")
    assert await worker.prepare(first, arguments(first), fingerprint=True) is None  # starting
    await answered(worker)
    for i, text in enumerate(TEXTS):
        raw = message("sms", f"s{i}", text, "+6281234500001").model_copy(
            update={"raw_payload": text.encode(), "reply_hints": {"to": "+6281234500001"}})
        complaint = normalize(raw, router=ROUTER, **arguments(raw))
        expected = fingerprint_of(complaint, ROUTER)
        assert await worker.prepare(raw, arguments(raw), fingerprint=True) == \
            (complaint, (expected, index_hashes(expected))), text[:40]
        assert await worker.prepare(raw, arguments(raw), fingerprint=False) == (complaint, None)
    empty = message("sms", "empty", "   ", "+6281234500001")
    assert await worker.prepare(empty, arguments(empty), fingerprint=True) is None  # refused
    assert await worker.prepare(first, arguments(first), fingerprint=True) is not None


async def test_a_killed_worker_costs_no_complaint_and_comes_back(
        worker: IntakeWorker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gateway.intake_worker")
    async with gateway(f"sqlite:///{tmp_path}/lapor.db", tmp_path, worker=worker) as (
            intake, db):
        first = await intake.submit(message("webform", "w1", LAMP_WEB, "web-1"))
        await answered(worker)
        killed = worker.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        sms = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        assert (await stored(db, sms.complaint_id)).duplicate_of == first.complaint_id
        await wait_for(lambda: holds(gone(killed)), within=10, what="the killed child reaped")
        assert f"intake worker pid {killed} stopped: it exited (exit code -9)" in caplog.text

        await answered(worker)  # started again at a later complaint
        assert worker.pid not in (None, killed)
        wa = await intake.submit(message("whatsapp", "wa1", LAMP_WA, "6281234500002"))
        assert (await stored(db, wa.complaint_id)).cluster_id == first.complaint_id


async def test_a_hung_worker_is_killed_at_its_deadline(worker: IntakeWorker) -> None:
    await answered(worker)
    hung = worker.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    sms = message("sms", "s1", LAMP_SMS, "+6281234500001")
    assert await worker.prepare(sms, arguments(sms), fingerprint=True) is None  # at timeout_s
    await wait_for(lambda: holds(gone(hung)), within=10, what="the hung child killed")
    complaint, _ = await answered(worker, sms)
    assert worker.pid != hung and complaint.body == LAMP_SMS


async def test_an_idle_worker_stops_and_starts_again() -> None:
    worker = IntakeWorker(ROUTER, idle_s=0.4, restart_after_s=0.0)
    try:
        await answered(worker)
        first = worker.pid
        assert first is not None
        await wait_for(lambda: holds(worker.pid is None and gone(first)), within=10,
                       what="the idle child stopped")
        await answered(worker)
        assert worker.pid not in (None, first)
    finally:
        await worker.aclose()


async def test_closing_stops_the_worker_and_starts_no_other(worker: IntakeWorker) -> None:
    await answered(worker)
    pid = worker.pid
    assert pid is not None
    await worker.aclose()
    assert gone(pid) and worker.pid is None
    raw = message("webform", "w1", LAMP_WEB, "web-1")
    assert await worker.prepare(raw, arguments(raw), fingerprint=True) is None
    assert worker.pid is None


ROOT = Path(__file__).resolve().parents[2]
#: A gateway stand-in: starts a worker, prints its child's pid once it answers, then waits.
PARENT = """
import asyncio
from datetime import UTC, datetime
from gateway.intake_worker import IntakeWorker
from normalizer.ids import complaint_id, tracking_code
from normalizer.raw import RawMessage
from normalizer.routing import Router

async def main():
    worker = IntakeWorker(Router.from_files())
    raw = RawMessage(channel="sms", account="main", native_id="1", text="Lampu jalan mati",
                     received_at=datetime.now(UTC))
    cid = complaint_id("sms", "main", "1")
    arguments = {"complaint_id": cid, "tracking_code": tracking_code(cid),
                 "gateway_version": "test", "raw_ref": "outbox:" + cid}
    while await worker.prepare(raw, arguments, fingerprint=True) is None:
        await asyncio.sleep(0.05)
    print(worker.pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_the_child_exits_when_the_gateway_is_killed() -> None:
    """kill -9 of the gateway leaves no worker behind: the child exits when its stdin closes."""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, stdout=asyncio.subprocess.PIPE,
        cwd=ROOT)
    try:
        assert parent.stdout is not None
        child = int(await asyncio.wait_for(parent.stdout.readline(), 60))
        assert not gone(child)
    finally:
        parent.kill()
        await parent.wait()
    await wait_for(lambda: holds(gone(child)), within=10, what="the orphaned child exited")
