"""Text, contact and date cleaning, and building a Complaint from a RawMessage."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from errors import ValidationFailed
from normalizer.ids import complaint_id, tracking_code
from normalizer.normalize import (
    TITLE_MAX,
    clean_text,
    derive_title,
    normalize,
    normalize_email,
    normalize_phone,
    parse_incident_date,
)
from normalizer.raw import RawMessage, Sender, sender_key
from normalizer.schema import Classification, Complaint, Location

RECEIVED = datetime(2024, 6, 1, 9, 30, tzinfo=UTC)

# --- clean_text -------------------------------------------------------------------------------


def test_clean_text_applies_nfc() -> None:
    decomposed = "Jalan Cafe\u0301 rusak"
    assert clean_text(decomposed) == "Jalan Caf\u00e9 rusak"


def test_clean_text_removes_control_characters() -> None:
    assert clean_text("ja\x00lan\x07 ru\x1bsak\x7f") == "jalan rusak"


def test_clean_text_collapses_whitespace_and_trims() -> None:
    assert clean_text("  jalan \t\t rusak\u00a0\u00a0parah  ") == "jalan rusak parah"
    assert clean_text("baris satu   \n   baris dua") == "baris satu\nbaris dua"


def test_clean_text_normalises_line_endings() -> None:
    assert clean_text("satu\r\ndua\rtiga") == "satu\ndua\ntiga"


def test_clean_text_keeps_at_most_one_blank_line() -> None:
    assert clean_text("satu\n\n\n\n\ndua") == "satu\n\ndua"
    # Lines holding only blanks count as blank lines.
    assert clean_text("satu\n  \n\t\n \u3000 \ndua") == "satu\n\ndua"
    assert clean_text("satu\n\ndua") == "satu\n\ndua"


def test_clean_text_of_only_blanks_is_empty() -> None:
    assert clean_text(" \n\t\r\n \x00 ") == ""


# --- derive_title -----------------------------------------------------------------------------


def test_derive_title_uses_first_line() -> None:
    assert derive_title("Lampu jalan mati\nSudah seminggu gelap.") == "Lampu jalan mati"


def test_derive_title_short_line_untouched() -> None:
    line = "x" * TITLE_MAX
    assert derive_title(line) == line


def test_derive_title_cuts_long_line_at_word_boundary_with_ellipsis() -> None:
    line = " ".join(["pengaduan"] * 30)  # 299 characters
    title = derive_title(line)
    assert title.endswith("…")
    stem = title[:-1]
    assert len(stem) <= TITLE_MAX
    assert line.startswith(stem)
    # Cut between words, never inside one.
    assert line[len(stem)] == " "
    assert stem.split(" ") == ["pengaduan"] * len(stem.split(" "))


def test_derive_title_strips_trailing_punctuation_before_ellipsis() -> None:
    line = ("kata, " * 40).strip()
    title = derive_title(line)
    assert title.endswith("kata…")


def test_derive_title_single_huge_word_is_hard_cut() -> None:
    title = derive_title("a" * 500)
    assert title == "a" * (TITLE_MAX - 1) + "…"
    assert len(title) == TITLE_MAX  # the ellipsis counts: a title never exceeds the limit


# --- normalize_phone / normalize_email --------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["081234567890", "0812-3456-7890", "6281234567890", "+6281234567890", "+62 812-3456-7890",
     " (0812) 3456 7890 "],
)
def test_normalize_phone_indonesian_forms(raw: str) -> None:
    assert normalize_phone(raw) == "+6281234567890"


def test_normalize_phone_keeps_foreign_country_code() -> None:
    assert normalize_phone("+1 202-555-0123") == "+12025550123"


@pytest.mark.parametrize("raw", [None, "", "   ", "abc", "12", "0812", "tidak ada", "@budi"])
def test_normalize_phone_invalid_is_none(raw: str | None) -> None:
    assert normalize_phone(raw) is None


@pytest.mark.parametrize("raw", ["0000000000", "081234", "08123456789012345"])
def test_normalize_phone_rejects_numbers_that_are_not_valid(raw: str) -> None:
    # The docstring promises None "when it is not a valid number"; these only have a
    # plausible length (is_possible_number) but are not valid Indonesian numbers.
    assert normalize_phone(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("budi@example.com", "budi@example.com"),
        ("  Budi.Santoso@Example.CO.ID ", "budi.santoso@example.co.id"),
    ],
)
def test_normalize_email_valid(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw", [None, "", "budi", "budi@", "@example.com", "budi@example", "bu di@example.com",
            "budi@@example.com"],
)
def test_normalize_email_invalid_is_none(raw: str | None) -> None:
    assert normalize_email(raw) is None


# --- parse_incident_date ----------------------------------------------------------------------


def test_parse_incident_date_accepts_past_and_today() -> None:
    received = date(2024, 6, 1)
    assert parse_incident_date("2024-05-20", received) == date(2024, 5, 20)
    assert parse_incident_date(" 2024-06-01 ", received) == received


@pytest.mark.parametrize("raw", [None, ""])
def test_parse_incident_date_absent_is_none(raw: str | None) -> None:
    assert parse_incident_date(raw, date(2024, 6, 1)) is None


def test_parse_incident_date_future_is_refused() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_incident_date("2024-06-02", date(2024, 6, 1))
    assert "incident_date" in info.value.fields


@pytest.mark.parametrize("raw", ["kemarin", "2024-13-01", "31/05/2024", "2024-02-30"])
def test_parse_incident_date_garbage_is_refused(raw: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_incident_date(raw, date(2024, 6, 1))
    assert set(info.value.fields) == {"incident_date"}


# --- normalize --------------------------------------------------------------------------------


def _raw(**changes: Any) -> RawMessage:
    values: dict[str, Any] = {
        "channel": "webform",
        "account": "web",
        "native_id": "0123456789abcdef0123456789abcdef",
        "received_at": RECEIVED,
        "text": "Jalan di depan pasar berlubang besar.\nSudah dua bulan tidak diperbaiki.",
    }
    values.update(changes)
    return RawMessage(**values)


def _normalize(raw: RawMessage) -> Complaint:
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    return normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                     gateway_version="0.1.0", raw_ref="raw/1")


def test_normalize_builds_valid_complaint() -> None:
    raw = _raw(
        title="  Jalan   berlubang ",
        sender=Sender(name=" Budi\x00 ", email=" Budi@Example.COM ", phone="0812-3456-7890"),
        incident_date="2024-05-30",
        location=Location(text="  Jl.  Merdeka \t 1 "),
        agency=" Dinas  PU ",
        category="infrastruktur",
        confidential=True,
        connector="webform",
    )
    complaint = _normalize(raw)
    cid = complaint_id("webform", "web", raw.native_id)
    assert complaint.id == cid
    assert complaint.tracking_code == tracking_code(cid)
    assert complaint.title == "Jalan berlubang"
    assert complaint.body == raw.text
    assert complaint.reporter.name == "Budi"
    assert complaint.reporter.email == "budi@example.com"
    assert complaint.reporter.phone == "+6281234567890"
    assert complaint.reporter.anonymous is False
    assert complaint.incident_date == date(2024, 5, 30)
    assert complaint.location == Location(text="Jl. Merdeka 1")
    assert complaint.agency == "Dinas PU"
    assert complaint.classification is Classification.PENGADUAN
    assert complaint.confidential is True
    assert complaint.audit.connector == "webform"
    assert complaint.audit.account == "web"
    assert complaint.audit.raw_ref == "raw/1"
    assert complaint.audit.gateway_version == "0.1.0"
    # The result is a valid wire object.
    assert Complaint.from_json(complaint.to_json()) == complaint


def test_normalize_derives_title_when_missing() -> None:
    complaint = _normalize(_raw(title=None))
    assert complaint.title == "Jalan di depan pasar berlubang besar."


def test_normalize_derives_title_when_blank() -> None:
    complaint = _normalize(_raw(title=" \t "))
    assert complaint.title == "Jalan di depan pasar berlubang besar."


def test_normalize_carries_anonymous_flag_to_reporter() -> None:
    complaint = _normalize(_raw(anonymous=True, sender=Sender(name="Budi")))
    assert complaint.reporter.anonymous is True


def test_normalize_drops_invalid_contacts() -> None:
    complaint = _normalize(_raw(sender=Sender(email="bukan email", phone="abc")))
    assert complaint.reporter.email is None
    assert complaint.reporter.phone is None


def test_normalize_cleans_body() -> None:
    complaint = _normalize(_raw(text="  Lampu\x00 mati   \n\n\n\n di  gang 3  "))
    assert complaint.body == "Lampu mati\n\ndi gang 3"


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "\x00\x07"])
def test_normalize_empty_body_is_refused(text: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        _normalize(_raw(text=text))
    assert "body" in info.value.fields


def test_normalize_empty_location_becomes_none() -> None:
    assert _normalize(_raw(location=Location())).location is None


def test_normalize_defaults_connector_to_channel() -> None:
    assert _normalize(_raw(connector="")).audit.connector == "webform"


def test_normalize_future_incident_date_is_refused() -> None:
    tomorrow = (RECEIVED + timedelta(days=1)).date().isoformat()
    with pytest.raises(ValidationFailed) as info:
        _normalize(_raw(incident_date=tomorrow))
    assert "incident_date" in info.value.fields


def test_normalize_schema_violation_becomes_validation_failed() -> None:
    with pytest.raises(ValidationFailed) as info:
        _normalize(_raw(agency="x" * 300))
    assert "agency" in info.value.fields


def test_normalize_naive_received_at_is_refused() -> None:
    with pytest.raises(ValidationFailed) as info:
        _normalize(_raw(received_at=datetime(2024, 6, 1, 9, 30)))
    assert "received_at" in info.value.fields


def test_normalize_oversized_sender_field_is_validation_failed() -> None:
    # A channel handle longer than Reporter allows must be reported as ValidationFailed (per
    # normalize's contract), not leak a raw pydantic ValidationError.
    with pytest.raises(ValidationFailed) as info:
        _normalize(_raw(sender=Sender(handle="@" + "x" * 300)))
    assert any(key.endswith("handle") for key in info.value.fields)


def test_derive_title_keeps_a_word_that_ends_exactly_at_the_cut() -> None:
    body = "kata " * 19 + "ruas " + "sisa kalimat panjang"  # "ruas" ends at character 99
    title = derive_title(body)
    assert title == "kata " * 19 + "ruas…"
    assert len(title) == TITLE_MAX


def test_rules_fill_what_the_citizen_left_empty_and_say_which_rule() -> None:
    from datetime import UTC, datetime

    from normalizer.routing import Router

    raw = RawMessage(channel="whatsapp", account="1065", native_id="wamid.R1",
                     received_at=datetime(2026, 11, 20, 2, 0, tzinfo=UTC),
                     text="Lampu jalan di Jl. Juanda Samarinda mati sejak kemarin, gelap sekali.")
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    complaint = normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                          gateway_version="t", raw_ref=None, router=Router.from_files())
    assert complaint.classification is Classification.PENGADUAN
    assert complaint.category and complaint.agency
    assert complaint.location is not None and complaint.location.region_code == "64.72"
    assert complaint.incident_date == date(2026, 11, 19)
    decided = complaint.audit.decisions
    assert {"classification", "category", "agency", "region", "incident_date"} <= set(decided)
    assert all(rule and rule != "citizen" for rule in decided.values())

    chosen = raw.model_copy(update={"classification": Classification.ASPIRASI,
                                    "agency": "Dinas PUPR"})
    complaint = normalize(chosen, complaint_id=cid, tracking_code=tracking_code(cid),
                          gateway_version="t", raw_ref=None, router=Router.from_files())
    assert complaint.classification is Classification.ASPIRASI  # the citizen's choice wins
    assert complaint.agency == "Dinas PUPR"
    assert complaint.audit.decisions["classification"] == "citizen"


def test_today_in_eastern_indonesia_is_not_the_future() -> None:
    from datetime import UTC, datetime

    # 22:30 UTC on 20 Nov is already 21 Nov in Jayapura (WIT) and 06:30 in Makassar (WITA).
    raw = RawMessage(channel="api", account="p", native_id="tz-1", text="Banjir pagi ini.",
                     received_at=datetime(2026, 11, 20, 22, 30, tzinfo=UTC),
                     incident_date="2026-11-21")
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    complaint = normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                          gateway_version="t", raw_ref=None)
    assert complaint.incident_date == date(2026, 11, 21)


def test_control_characters_never_reach_the_complaint() -> None:
    from datetime import UTC, datetime

    raw = RawMessage(channel="api", account="p", native_id="nul\x00id", text="Jalan\x00 rusak.",
                     received_at=datetime(2026, 11, 20, tzinfo=UTC), category="jalan\x00",
                     sender=Sender(email="a\x00@b.id", handle="@x\x00y", channel_user_id="7\x00"))
    cid = complaint_id(raw.channel, raw.account, raw.native_id)
    complaint = normalize(raw, complaint_id=cid, tracking_code=tracking_code(cid),
                          gateway_version="t", raw_ref=None)
    assert "\x00" not in complaint.to_json().decode("unicode_escape")
    assert complaint.category == "jalan" and complaint.native_id == "nulid"
    assert complaint.reporter.email is None  # not an address once the NUL is seen
    assert sender_key(raw) == "7"


# --- properties of normalize_phone ------------------------------------------------------------

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_OPERATORS = ["811", "812", "813", "821", "822", "823", "852", "853", "857", "858", "877",
              "878", "881", "895", "896", "897"]


@st.composite
def _mobile_writings(draw: st.DrawFn) -> tuple[str, str]:
    """An Indonesian mobile number's national digits and one way a citizen writes it."""
    digits = draw(st.sampled_from(_OPERATORS)) + draw(st.text("0123456789", min_size=7,
                                                             max_size=9))
    prefix = draw(st.sampled_from(["0", "62", "+62", "+62 ", "(+62) ", "+62-", "(0"]))
    sep = draw(st.sampled_from(["", " ", "-", "."]))
    body = sep.join(g for g in (digits[:3], digits[3:7], digits[7:]) if g)
    if prefix == "(0":
        body = body.replace(sep, ") ", 1) if sep else f"{digits[:3]}) {digits[3:]}"
    padding = draw(st.sampled_from(["", " ", "  "]))
    return digits, f"{padding}{prefix}{body}{padding}"


@settings(max_examples=200, deadline=None)
@given(_mobile_writings())
def test_every_writing_of_a_mobile_number_is_one_e164(case: tuple[str, str]) -> None:
    digits, written = case
    canonical = normalize_phone("0" + digits)
    assume(canonical is not None)  # a number the numbering plan does not allot is refused
    assert canonical == "+62" + digits
    assert normalize_phone(written) == canonical


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.text("0123456789 +-().", max_size=20),
                 _mobile_writings().map(lambda c: c[1])))
def test_phone_normalisation_never_raises_and_is_idempotent(raw: str) -> None:
    phone = normalize_phone(raw)
    assert phone is None or _E164.match(phone)
    assert normalize_phone(phone) == phone
