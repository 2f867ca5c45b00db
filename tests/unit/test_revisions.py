"""Edits of a complaint's text: history kept, newest text wins, the same edit applies once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from normalizer.ids import complaint_id, tracking_code
from normalizer.normalize import normalize
from normalizer.raw import RawMessage
from normalizer.revisions import MAX_REVISIONS, apply_edit, revision
from normalizer.routing import Router
from normalizer.schema import Classification, Complaint

SENT = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
TARGET = complaint_id("telegram", "bot", "1:42")
ROUTER = Router.from_files()


def version(text: str, native_id: str = "1:42", minutes: int = 0,
            classification: Classification | None = None) -> Complaint:
    raw = RawMessage(channel="telegram", account="bot", native_id=native_id,
                     received_at=SENT + timedelta(minutes=minutes, seconds=5),
                     sent_at=SENT + timedelta(minutes=minutes), text=text,
                     classification=classification)
    return normalize(raw, complaint_id=TARGET, tracking_code=tracking_code(TARGET),
                     gateway_version="test", raw_ref=None, router=ROUTER)


def test_an_edit_keeps_every_version_and_shows_the_newest() -> None:
    original = version("Jalan rusak di Jl. Juanda.")
    edited = apply_edit(original, version("Jalan rusak parah di Jl. Juanda 3.", "1:42:edit:1", 2))
    assert edited is not None
    assert edited.body == "Jalan rusak parah di Jl. Juanda 3."
    assert [v.body for v in edited.revisions] == [original.body, edited.body]
    assert [v.native_id for v in edited.revisions] == ["1:42", "1:42:edit:1"]
    assert edited.id == original.id and edited.tracking_code == original.tracking_code
    assert revision(original) == 0 and revision(edited) == 1


def test_the_same_edit_twice_changes_nothing() -> None:
    edit = version("Jalan rusak parah.", "1:42:edit:1", 2)
    once = apply_edit(version("Jalan rusak."), edit)
    assert once is not None
    assert apply_edit(once, edit) is None


def test_an_edit_arriving_late_joins_the_history_without_replacing_newer_text() -> None:
    original = version("Versi satu tentang jalan rusak.")
    newest = apply_edit(original, version("Versi tiga tentang jalan rusak.", "e3", 9))
    assert newest is not None
    late = apply_edit(newest, version("Versi dua tentang jalan rusak.", "e2", 4))
    assert late is not None
    assert late.body == "Versi tiga tentang jalan rusak."
    assert [v.native_id for v in late.revisions] == ["1:42", "e2", "e3"]


def test_what_the_citizen_chose_survives_an_edit() -> None:
    original = version("Mohon info jadwal vaksin.",
                       classification=Classification.PERMINTAAN_INFORMASI)
    edited = apply_edit(original, version("Sampah menumpuk di pasar, bau sekali.", "e1", 1))
    assert edited is not None
    assert edited.classification is Classification.PERMINTAAN_INFORMASI
    assert edited.audit.decisions["classification"] == "citizen"


def test_rules_decide_again_on_the_edited_text() -> None:
    original = version("Jalan rusak berlubang di Jl. Juanda, Samarinda.")
    edited = apply_edit(original, version(
        "Mohon informasi jadwal pembuatan KTP elektronik di Samarinda?", "e1", 1))
    assert edited is not None
    assert original.audit.decisions.get("classification") != "citizen"
    assert edited.classification.value == "permintaan_informasi"
    assert edited.audit.decisions["classification"] != original.audit.decisions.get(
        "classification")


def test_history_is_bounded_keeping_the_first_text() -> None:
    complaint = version("Teks pertama laporan.")
    for n in range(1, MAX_REVISIONS + 10):
        revised = apply_edit(complaint, version(f"Teks ke-{n} laporan.", f"e{n}", n))
        assert revised is not None
        complaint = revised
    assert len(complaint.revisions) == MAX_REVISIONS
    assert complaint.revisions[0].body == "Teks pertama laporan."
    assert complaint.body == f"Teks ke-{MAX_REVISIONS + 9} laporan."
