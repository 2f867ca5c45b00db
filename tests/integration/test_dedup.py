"""Near duplicates through the real intake and the durable index (SQLite and PostgreSQL):
labelled, never dropped, found again after a restart and by another gateway instance."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

import forwarder.bands as bands_module
from config.settings import load_settings
from errors import StoreUnavailable
from forwarder.bands import BandWriter
from forwarder.db import Database, Executor, open_database
from forwarder.fingerprints import FingerprintIndex
from forwarder.outbox import Outbox
from forwarder.replies import ReplyQueue
from forwarder.store import CentralStore
from gateway.attachments import AttachmentStore
from gateway.cli import export
from gateway.intake import FINGERPRINT_INLINE_CHARS, GatewayIntake, NearDuplicates
from gateway.intake_worker import IntakeWorker
from gateway.status import StatusService
from normalizer.raw import RawMessage, Sender
from normalizer.routing import Router
from normalizer.schema import Complaint
from tests.integration.support import wait_for

DAY = 86400.0
ROUTER = Router.from_files()

LAMP_WEB = ("Lampu penerangan jalan di Jl. Pahlawan dekat Masjid Al-Ikhlas Samarinda sudah mati "
            "seminggu, malam sangat gelap dan rawan begal.")
LAMP_SMS = "LAMPU JLN PAHLAWAN SAMARINDA MATI UDH SEMINGGU, GELAP BGT MALAM. MOHON DIPERBAIKI"
LAMP_OTHER_STREET = ("Lampu penerangan jalan di Jl. Juanda dekat Masjid Al-Ikhlas Samarinda sudah "
                     "mati seminggu, malam sangat gelap dan rawan begal.")
LAMP_WA = "Min lampu jalan di jl pahlawan samarinda mati terus sdh 1 minggu, tlg dibetulin"


@asynccontextmanager
async def gateway(url: str, tmp_path: Path, window_s: float = 30 * DAY,
                  worker: IntakeWorker | None = None,
                  ) -> AsyncIterator[tuple[GatewayIntake, Database]]:
    """One gateway instance's intake on the store at ``url``, wired as ``lapor-gateway run``
    wires it: on SQLite the band rows go to their own file after each commit. Messages are
    normalised and fingerprinted by ``worker`` when one is given, else in process."""
    db = await open_database(url, pool_size=2)
    bands_db = await db.sibling("lsh", searched=True)
    try:
        async with AsyncExitStack() as stack:
            bands = None if bands_db is db else await stack.enter_async_context(
                BandWriter(bands_db, db, window_s))
            outbox = await stack.enter_async_context(
                Outbox(db, bands=bands.put if bands else None))
            yield GatewayIntake(outbox, AttachmentStore(tmp_path / "att", 1024 * 1024),
                                StatusService(CentralStore(db), outbox), ReplyQueue(db),
                                ROUTER, repeat_window_s=3600,
                                near_duplicates=NearDuplicates(
                                    FingerprintIndex(db, bands=bands), window_s),
                                worker=worker), db
    finally:
        if bands_db is not db:
            await bands_db.close()
        await db.close()


def message(channel: str, native_id: str, text: str, sender: str,
            received_at: datetime | None = None) -> RawMessage:
    return RawMessage(channel=channel, account="main", native_id=native_id,
                      received_at=received_at or datetime.now(UTC), text=text,
                      sender=Sender(channel_user_id=sender))


async def stored(db: Database, complaint_id: str) -> Complaint:
    row = await db.fetchrow("SELECT payload FROM outbox WHERE id = $1", complaint_id)
    assert row is not None
    return Complaint.from_json(row[0])


async def test_near_duplicates_are_labelled_and_kept(store_url: str, tmp_path: Path) -> None:
    async with gateway(store_url, tmp_path) as (intake, db):
        first = await intake.submit(message("webform", "w1", LAMP_WEB, "web-1"))
        sms = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        other = await intake.submit(message("webform", "w2", LAMP_OTHER_STREET, "web-2"))
        follow = await intake.submit(message(
            "telegram", "t1", f"Soal laporan {first.tracking_code}: lampu di Jl. Pahlawan "
            "Samarinda masih mati.", "tg-9"))
        assert not sms.duplicate and sms.complaint_id != first.complaint_id  # never dropped
        root, dup = await stored(db, first.complaint_id), await stored(db, sms.complaint_id)
        assert (root.duplicate_of, root.cluster_id) == (None, None)
        assert (dup.duplicate_of, dup.cluster_id) == (first.complaint_id, first.complaint_id)
        assert dup.audit.decisions["duplicate_of"].startswith(
            f"near-duplicate of {first.complaint_id}: ")
        template = await stored(db, other.complaint_id)
        assert template.duplicate_of is None  # the same template for another street
        threaded = await stored(db, follow.complaint_id)
        assert threaded.thread_of == first.complaint_id and threaded.duplicate_of is None
        indexed = {r[0]: r[1] for r in await db.fetch(
            "SELECT complaint_id, cluster_id FROM fingerprints")}
        assert indexed == {first.complaint_id: first.complaint_id,
                           sms.complaint_id: first.complaint_id,
                           other.complaint_id: other.complaint_id}

        # A redelivery is the same complaint, indexed once.
        again = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        assert again.duplicate and again.complaint_id == sms.complaint_id
        assert (await db.fetchrow("SELECT count(*) FROM fingerprints"))[0] == 3  # type: ignore[index]

    # A restarted gateway (and, on PostgreSQL, any other instance) finds the cluster.
    async with gateway(store_url, tmp_path) as (intake, db), \
            gateway(store_url, tmp_path) as (other_instance, _):
        later = await intake.submit(message("whatsapp", "wa1", LAMP_WA, "6281234500002"))
        assert (await stored(db, later.complaint_id)).cluster_id == first.complaint_id
        elsewhere = await other_instance.submit(message(
            "x", "x1", "lampu jalan pahlawan samarinda mati seminggu, gelap bgt malam", "@warga"))
        assert (await stored(db, elsewhere.complaint_id)).duplicate_of == first.complaint_id


async def test_only_the_window_is_compared(tmp_path: Path) -> None:
    async with gateway(f"sqlite:///{tmp_path}/lapor.db", tmp_path, window_s=7 * DAY) as (
            intake, db):
        old = datetime.now(UTC) - timedelta(days=8)
        first = await intake.submit(message("webform", "w1", LAMP_WEB, "web-1", old))
        fresh = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        assert (await stored(db, fresh.complaint_id)).duplicate_of is None
        assert first.complaint_id != fresh.complaint_id


async def test_export_carries_the_cluster(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/lapor.db"
    async with gateway(url, tmp_path) as (intake, db):
        first = await intake.submit(message("webform", "w1", LAMP_WEB, "web-1"))
        dup = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        await CentralStore(db).upsert_many([await stored(db, first.complaint_id),
                                            await stored(db, dup.complaint_id)])
    out = io.StringIO()
    assert await export(load_settings(store={"url": url}), "jsonl", out) == 0
    records = {r["id"]: r for r in map(orjson.loads, out.getvalue().splitlines())}
    assert records[dup.complaint_id]["duplicate_of"] == first.complaint_id
    assert records[dup.complaint_id]["cluster_id"] == first.complaint_id
    assert records[dup.complaint_id]["tracking_code"] == dup.tracking_code
    out = io.StringIO()
    await export(load_settings(store={"url": url}), "csv", out)
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert rows[dup.complaint_id]["cluster_id"] == first.complaint_id
    assert rows[first.complaint_id]["cluster_id"] == ""


async def test_long_letters_are_fingerprinted_off_the_event_loop(tmp_path: Path) -> None:
    letter = (LAMP_WEB + " Kami warga RT 12 sudah melapor ke ketua RT dan kelurahan, namun "
              "belum ada tindak lanjut. Anak-anak pulang mengaji melewati jalan ini dan ibu-ibu "
              "pulang dari pasar subuh juga takut. Beberapa kali motor warga hampir dijambret "
              "di titik yang gelap itu. Kami mohon Dinas Perhubungan segera mengganti lampu "
              "yang rusak dan memeriksa kabelnya, karena tiang di depan masjid juga miring.")
    assert len(letter) > FINGERPRINT_INLINE_CHARS
    async with gateway(f"sqlite:///{tmp_path}/lapor.db", tmp_path) as (intake, db):
        first = await intake.submit(message("webform", "w1", letter, "web-1"))
        second = await intake.submit(message("api", "a1", letter.replace("Kami", "Kita"),
                                             "app-7"))
        assert (await stored(db, second.complaint_id)).duplicate_of == first.complaint_id


async def test_a_labelling_fault_never_costs_a_complaint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    async with gateway(f"sqlite:///{tmp_path}/lapor.db", tmp_path) as (intake, db):
        first = await intake.submit(message("webform", "w1", LAMP_WEB, "web-1"))
        monkeypatch.setattr("gateway.intake.decide", broken)
        second = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        assert not second.duplicate and second.complaint_id != first.complaint_id
        assert (await stored(db, second.complaint_id)).duplicate_of is None
    assert "near-duplicate check failed" in caplog.text and "RuntimeError" in caplog.text


async def test_intake_waits_while_the_band_file_refuses_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: band rows that cannot be written stay searchable in memory, up to a bound;
    past it new complaints are refused (503 + Retry-After, the channel retries) until the
    file takes rows again. Nothing accepted is lost and the duplicate is still found."""
    monkeypatch.setattr(bands_module, "MAX_UNWRITTEN", 2)
    refusing = True
    real_insert = bands_module.insert_bands

    async def insert(tx: Executor, rows: object) -> None:
        if refusing:
            raise StoreUnavailable("disk I/O error")
        await real_insert(tx, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(bands_module, "insert_bands", insert)
    async with gateway(f"sqlite:///{tmp_path}/lapor.db", tmp_path) as (intake, db):
        first = await intake.submit(message("webform", "w1", LAMP_WEB, "web-1"))
        await intake.submit(message("webform", "w2", LAMP_OTHER_STREET, "web-2"))
        assert await intake.refusal() is not None
        with pytest.raises(StoreUnavailable):
            await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        refusing = False

        async def taken() -> bool:
            return await intake.refusal() is None

        await wait_for(taken, within=10, what="the band rows written once the file recovers")
        sms = await intake.submit(message("sms", "s1", LAMP_SMS, "+6281234500001"))
        assert (await stored(db, sms.complaint_id)).duplicate_of == first.complaint_id
    assert len(await _rows(tmp_path / "lapor-lsh.db")) > 0


async def _rows(path: Path) -> list[tuple[object, ...]]:
    bands = await open_database(f"sqlite:///{path}")
    try:
        return await bands.fetch("SELECT seq FROM lsh_bands")
    finally:
        await bands.close()
