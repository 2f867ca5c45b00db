"""Edited texts through the outbox and the central store, on SQLite and PostgreSQL: one
complaint, republished with its new text; a stale receipt or record never wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from forwarder.db import Database
from forwarder.outbox import Outbox
from forwarder.store import CentralStore
from normalizer.ids import complaint_id, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage
from normalizer.revisions import apply_edit
from normalizer.schema import Complaint

SENT = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
TARGET = complaint_id("telegram", "bot", "1:42")


def version(text: str, native_id: str = "1:42", minutes: int = 0) -> Complaint:
    raw = RawMessage(channel="telegram", account="bot", native_id=native_id,
                     received_at=SENT + timedelta(minutes=minutes),
                     sent_at=SENT + timedelta(minutes=minutes), text=text)
    return normalize(raw, complaint_id=TARGET, tracking_code=tracking_code(TARGET),
                     gateway_version="test", raw_ref=None)


async def test_a_delivered_complaint_is_published_again_with_its_edit(
        db: Database) -> None:  # noqa: F811
    async with Outbox(db) as outbox:
        added = await outbox.add(version("Lampu jalan mati di Jl. Juanda."), b"{}", "a/json")
        [due] = await outbox.claim_due(10, lease_s=30)
        assert await outbox.mark_delivered([due.complaint_id]) == 1

        edit = version("Lampu jalan mati sejak seminggu di Jl. Juanda.", "1:42:edit:1", 3)
        revised = await outbox.revise(TARGET, edit)
        assert revised is not None and not revised.duplicate
        assert revised.tracking_code == added.tracking_code
        again = await outbox.revise(TARGET, edit)  # the edit redelivered
        assert again is not None and again.duplicate
        assert await outbox.revise(complaint_id("telegram", "bot", "9:9"), edit) is None

        [due] = await outbox.claim_due(10, lease_s=30)
        published = Complaint.from_json(due.payload)
        assert published.body == edit.body and len(published.revisions) == 2
        # A receipt for the text before the edit leaves the entry pending...
        assert await outbox.mark_delivered([TARGET], {TARGET: 0}) == 0
        assert (await outbox.depth())[0] == 1
        # ...the receipt for the edited text delivers it.
        assert await outbox.mark_delivered([TARGET], {TARGET: 1}) == 1
        rows = await db.fetch("SELECT COUNT(*) FROM outbox")
        assert rows[0][0] == 1


async def test_the_central_store_keeps_the_newest_revision(db: Database) -> None:  # noqa: F811
    store = CentralStore(db)
    original = version("Sampah menumpuk di Pasar Segiri.")
    edited = apply_edit(original, version("Sampah menumpuk dan dibakar di Pasar Segiri.",
                                          "1:42:edit:1", 5))
    assert edited is not None
    await store.upsert_many([original])
    stored = await store.upsert_many([edited])
    assert Complaint.from_json(stored[TARGET].payload).body == edited.body
    stale = await store.upsert_many([original])  # a replay of the older record
    assert Complaint.from_json(stale[TARGET].payload).body == edited.body
    assert await store.count() == 1
