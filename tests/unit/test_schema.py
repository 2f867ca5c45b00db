"""The v1 complaint schema: the published JSON Schema is in sync; the wire form round-trips."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from normalizer.ids import complaint_id, tracking_code
from normalizer.schema import (
    Attachment,
    AttachmentState,
    Audit,
    Classification,
    Complaint,
    Location,
    Reporter,
    json_schema,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "config" / "complaint.v1.schema.json"
REGENERATE = "python -m normalizer.schema > config/complaint.v1.schema.json"

CID = complaint_id("api", "dinas-pu", "ext-42")


def _complaint(**changes: Any) -> Complaint:
    values: dict[str, Any] = {
        "id": CID,
        "tracking_code": tracking_code(CID),
        "channel": "api",
        "native_id": "ext-42",
        "received_at": datetime(2024, 6, 1, 2, 3, 4, 567000, tzinfo=UTC),
        "title": "Jalan berlubang",
        "body": "Jalan di depan pasar berlubang besar.",
        "audit": Audit(connector="api", gateway_version="0.1.0", account="dinas-pu"),
    }
    values.update(changes)
    return Complaint(**values)


def test_published_json_schema_is_in_sync() -> None:
    if not SCHEMA_FILE.exists():
        pytest.fail(f"{SCHEMA_FILE} is missing; generate it with `{REGENERATE}`")
    published = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert published == json_schema(), (
        f"{SCHEMA_FILE.name} is out of date with normalizer.schema.Complaint; "
        f"regenerate it with `{REGENERATE}`"
    )


def test_json_schema_is_closed_and_versioned() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert {"id", "tracking_code", "channel", "native_id", "received_at", "title", "body",
            "audit"} <= set(schema["required"])
    assert schema["properties"]["schema_version"]["const"] == "1"


def test_minimal_complaint_round_trips() -> None:
    complaint = _complaint()
    assert Complaint.from_json(complaint.to_json()) == complaint
    assert Complaint.from_json(complaint.to_json().decode()) == complaint


def test_full_complaint_round_trips() -> None:
    other = complaint_id("api", "dinas-pu", "ext-1")
    complaint = _complaint(
        sent_at=datetime(2024, 6, 1, 9, 0, tzinfo=timezone(timedelta(hours=8))),
        reporter=Reporter(name="Budi", handle="@budi", email="budi@example.com",
                          phone="+6281234567890", channel_user_id="u1", anonymous=True),
        incident_date=date(2024, 5, 30),
        location=Location(text="Jl. Merdeka 1", lat=-0.5, lon=117.15, region_code="64.72"),
        attachments=(
            Attachment(name="foto.jpg", content_type="image/jpeg", size=1234, sha256="a" * 64,
                       storage_ref="file:attachments/aa/" + "a" * 64),
            Attachment(name="video.mp4", content_type="video/mp4", size=0,
                       state=AttachmentState.PENDING),
        ),
        classification=Classification.ASPIRASI,
        category="infrastruktur",
        agency="Dinas PU",
        confidential=True,
        thread_of=other,
        duplicate_of=other,
        cluster_id="c-1",
        audit=Audit(connector="api", raw_ref="raw/42", gateway_version="0.1.0",
                    account="dinas-pu"),
    )
    parsed = Complaint.from_json(complaint.to_json())
    assert parsed == complaint
    assert parsed.sent_at is not None and parsed.sent_at.utcoffset() == timedelta(hours=8)
    wire = json.loads(complaint.to_json())
    assert wire["schema_version"] == "1"
    assert wire["classification"] == "aspirasi"
    assert wire["attachments"][1]["state"] == "pending"


def test_to_json_includes_null_fields() -> None:
    wire = json.loads(_complaint().to_json())
    assert wire["incident_date"] is None
    assert wire["location"] is None


@pytest.mark.parametrize("where", ["top", "reporter", "audit"])
def test_unknown_fields_are_refused(where: str) -> None:
    wire = json.loads(_complaint().to_json())
    if where == "top":
        wire["extra_field"] = 1
    else:
        wire[where]["extra_field"] = 1
    with pytest.raises(ValidationError) as info:
        Complaint.from_json(json.dumps(wire))
    assert any(err["type"] == "extra_forbidden" for err in info.value.errors())


def test_unknown_keyword_refused_by_constructor() -> None:
    with pytest.raises(ValidationError):
        _complaint(priority="high")


@pytest.mark.parametrize(
    "changes",
    [
        {"id": "NOT-A-HASH"},
        {"tracking_code": "ABCDE-FGHIL"},  # I and L are not Crockford
        {"tracking_code": "abcde-fghjk"},
        {"body": ""},
        {"received_at": datetime(2024, 6, 1, 2, 3, 4)},  # naive
        {"schema_version": "2"},
        {"thread_of": "xyz"},
    ],
)
def test_invalid_values_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _complaint(**changes)


def test_complaint_is_frozen() -> None:
    complaint = _complaint()
    with pytest.raises(ValidationError):
        complaint.title = "lain"  # type: ignore[misc]


@pytest.mark.parametrize("encoded", [
    "\\u0000", "\\u001F", "\\u007f", "\\b", "\\f", "\x7f",  # escapes, and DEL needs none
])
@pytest.mark.parametrize("as_text", [False, True])
def test_from_json_strips_control_characters_however_encoded(encoded: str,
                                                             as_text: bool) -> None:
    # The wire form is scanned once; anything that may decode to a control character takes
    # the path that strips every string, nested models included.
    wire = _complaint(reporter=Reporter(name="Budi"),
                      location=Location(text="Pasar")).to_json().decode()
    for text in ('"Jalan berlubang"', '"Budi"', '"Pasar"'):
        wire = wire.replace(text, text[:3] + encoded + text[3:])
    parsed = Complaint.from_json(wire if as_text else wire.encode())
    assert (parsed.title, parsed.reporter.name) == ("Jalan berlubang", "Budi")
    assert parsed.location is not None and parsed.location.text == "Pasar"


def test_from_json_keeps_tabs_newlines_and_backslashes() -> None:
    original = _complaint(body="Baris satu\n\tbaris dua \\b bukan kontrol\r\n")
    assert Complaint.from_json(original.to_json()) == original
    assert Complaint.from_json(original.to_json().decode()) == original
