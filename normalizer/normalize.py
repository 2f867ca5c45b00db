"""Turn a :class:`RawMessage` into a :class:`Complaint`: clean text, contacts, title, dates.

Pure functions, no I/O. The citizen's words are kept as written apart from Unicode NFC,
control characters and runs of blank space.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import phonenumbers
from pydantic import ValidationError

from errors import ValidationFailed
from normalizer.dates import find_incident_date
from normalizer.raw import RawMessage
from normalizer.routing import Router
from normalizer.schema import Audit, Classification, Complaint, Location, Reporter

TITLE_MAX = 100  # LAPOR! shows judul in one line; longer titles are cut at a word boundary.
DEFAULT_REGION = "ID"  # Phone numbers without a country code are Indonesian.

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def clean_text(text: str) -> str:
    """NFC, no control characters, single spaces, at most one blank line, trimmed."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def derive_title(body: str) -> str:
    """A title from the first line of the body, cut at a word boundary."""
    first = body.split("\n", 1)[0].strip()
    if len(first) <= TITLE_MAX:
        return first
    room = TITLE_MAX - 1  # the ellipsis takes one character
    cut = first[:room] if first[room] == " " else first[:room].rsplit(" ", 1)[0]
    return (cut or first[:room]).rstrip(" ,.;:") + "…"


def normalize_phone(raw: str | None) -> str | None:
    """A phone number in E.164 (``+62...``), or None when it is not a valid number."""
    if not raw or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str | None) -> str | None:
    """A lower-cased email address, or None when it does not look like one."""
    if not raw:
        return None
    email = raw.strip().lower()
    return email if _EMAIL.match(email) and not _CONTROL.search(email) else None


#: Indonesia's easternmost time zone (WIT, UTC+9): a date is "in the future" only when it is
#: so everywhere in the country.
WIT = timezone(timedelta(hours=9))


def indonesian_today(moment: datetime) -> date:
    """The latest calendar date anywhere in Indonesia at ``moment`` (its WIT date)."""
    return moment.astimezone(WIT).date()


def parse_incident_date(raw: str | None, received: date) -> date | None:
    """An ISO incident date that is not in the future (relative phrases come later)."""
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw.strip())
    except ValueError as exc:
        raise ValidationFailed(
            "incident date is not a date", {"incident_date": "Tanggal kejadian tidak valid."}
        ) from exc
    if day > received:
        raise ValidationFailed(
            "incident date is in the future",
            {"incident_date": "Tanggal kejadian tidak boleh di masa depan."},
        )
    return day


@dataclass(frozen=True, slots=True)
class Derived:
    """What the rules derived for fields the citizen left empty, and which rule did it."""

    classification: Classification
    category: str | None
    agency: str | None
    region_code: str | None
    incident_date: date | None
    decisions: dict[str, str]


def derive(raw: RawMessage, title: str, body: str, location_text: str | None,
           router: Router | None) -> Derived:
    """Fill classification, category, agency, region and incident date from the text where
    the citizen did not choose them; what the citizen chose always wins."""
    decisions: dict[str, str] = {}
    if raw.incident_date:
        incident = parse_incident_date(raw.incident_date, indonesian_today(raw.received_at))
        decisions["incident_date"] = "citizen"
    else:
        found = find_incident_date(f"{title}\n{body}", raw.received_at)
        incident = found.day if found else None
        if found:
            decisions["incident_date"] = found.rule
    agency = clean_text(raw.agency) or None if raw.agency else None
    if router is None:
        return Derived(raw.classification or Classification.PENGADUAN, raw.category,
                       agency, None, incident, decisions)
    routing = router.route(f"{title}\n{body}", location=location_text)
    if raw.classification is not None:
        classification = raw.classification
        decisions["classification"] = "citizen"
    else:
        classification = Classification(routing.classification.value)
        decisions["classification"] = routing.classification.rule_id
    category = raw.category
    if category:
        decisions["category"] = "citizen"
    elif routing.category is not None:
        category = routing.category.value
        decisions["category"] = routing.category.rule_id
    if agency:
        decisions["agency"] = "citizen"
    elif routing.agency is not None:
        agency = router.agencies[routing.agency.value].name
        decisions["agency"] = routing.agency.rule_id
    region = routing.region.value if routing.region is not None else None
    if routing.region is not None:
        decisions["region"] = routing.region.rule_id
    return Derived(classification, category, agency, region, incident, decisions)


def normalize(
    raw: RawMessage, *, complaint_id: str, tracking_code: str, gateway_version: str,
    raw_ref: str | None, router: Router | None = None
) -> Complaint:
    """Build the v1 complaint for ``raw``; with a ``router``, derive what the citizen left
    empty (classification, category, agency, region, incident date), each with its rule.

    Raises :class:`ValidationFailed` (with per-field reasons) when the message cannot be a
    complaint, e.g. an empty body.
    """
    body = clean_text(raw.text)
    if not body:
        raise ValidationFailed("complaint text is empty", {"body": "Isi laporan wajib diisi."})
    title = clean_text(raw.title) if raw.title else ""
    sender = raw.sender
    location = raw.location
    if location is not None and location.text:
        location = location.model_copy(update={"text": clean_text(location.text)})
    derived = derive(raw, title, body, location.text if location else None, router)
    if derived.region_code and (location is None or not location.region_code):
        location = (location or Location()).model_copy(
            update={"region_code": derived.region_code})
    if location == Location():
        location = None
    try:
        reporter = Reporter(
            name=clean_text(sender.name)[:200] or None if sender.name else None,
            handle=sender.handle,
            email=normalize_email(sender.email),
            phone=normalize_phone(sender.phone),
            channel_user_id=sender.channel_user_id,
            anonymous=raw.anonymous,
        )
        return Complaint(
            id=complaint_id,
            tracking_code=tracking_code,
            channel=raw.channel,
            native_id=raw.native_id,
            received_at=raw.received_at,
            sent_at=raw.sent_at,
            reporter=reporter,
            title=(title or derive_title(body))[:200],
            body=body,
            incident_date=derived.incident_date,
            location=location,
            attachments=raw.attachments,
            classification=derived.classification,
            category=derived.category,
            agency=derived.agency,
            confidential=raw.confidential,
            thread_of=raw.thread_of,
            audit=Audit(
                connector=raw.connector or raw.channel,
                raw_ref=raw_ref,
                gateway_version=gateway_version,
                account=raw.account,
                decisions=derived.decisions,
            ),
        )
    except ValidationError as exc:
        fields = {".".join(str(p) for p in e["loc"]): e["msg"] for e in exc.errors()}
        raise ValidationFailed("complaint does not fit the schema", fields) from exc
