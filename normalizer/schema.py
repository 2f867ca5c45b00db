"""The complaint schema, version 1: what flows on ``complaints.v1`` into the central store.

Fields follow the LAPOR! report form (judul, isi, tanggal kejadian, lokasi, instansi tujuan,
kategori, lampiran, anonim, rahasia) plus identity, linkage and audit. The JSON Schema published
for the central system is ``config/complaint.v1.schema.json``; a test keeps it equal to
:func:`json_schema`. Change the model only by adding optional fields; anything else is a v2.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

SCHEMA_VERSION: Literal["1"] = "1"


class Classification(StrEnum):
    """The report type chosen by the citizen (LAPOR! klasifikasi)."""

    PENGADUAN = "pengaduan"
    ASPIRASI = "aspirasi"
    PERMINTAAN_INFORMASI = "permintaan_informasi"


class AttachmentState(StrEnum):
    """Where an attachment's bytes are."""

    STORED = "stored"
    PENDING = "pending"
    REJECTED = "rejected"


#: C0 control characters and DEL, except tab, line feed and carriage return: never part of
#: a citizen's words, and NUL is refused by PostgreSQL text and jsonb.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: What in JSON text may decode to one of :data:`CONTROL_CHARACTERS`: the raw character (DEL
#: needs no escape) or an escape (``\b``, ``\f``, ``\u0000``-``\u001f``, ``\u007f``).
#: Over-inclusive (``\u0009``, an escaped backslash before ``b``): a false match only costs the
#: slow path. Two patterns, since one with both alternatives scans three times slower.
_JSON_RAW_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_JSON_ESCAPED_CONTROLS = re.compile(rb"\\(?:[bf]|u00[01][0-9a-fA-F]|u007[fF])")
#: Validation context for JSON text found clean (:func:`_may_hold_controls`): nothing to strip.
_NO_CONTROLS = {"lapor_no_controls": True}


def _may_hold_controls(raw: bytes) -> bool:
    return _JSON_RAW_CONTROLS.search(raw) is not None or (
        b"\\" in raw and _JSON_ESCAPED_CONTROLS.search(raw) is not None)


def _without_controls(value: Any) -> Any:
    if isinstance(value, str):
        return CONTROL_CHARACTERS.sub("", value)
    if isinstance(value, dict):
        return {k: _without_controls(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_without_controls(v) for v in value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _strip_controls(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context is not None and info.context.get("lapor_no_controls"):
            return data  # JSON text checked whole by from_json: walking it would find nothing
        return _without_controls(data)


class Reporter(_Model):
    """Who reported. When ``anonymous`` is true the identity fields are withheld from anything
    that leaves the gateway for public use."""

    name: str | None = Field(None, max_length=200)
    handle: str | None = Field(None, max_length=200, description="Channel handle (@user).")
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=20, description="E.164, e.g. +6281234567890.")
    channel_user_id: str | None = Field(None, max_length=200)
    anonymous: bool = False


class Location(_Model):
    """Where the incident happened (lokasi)."""

    text: str | None = Field(None, max_length=500)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    region_code: str | None = Field(None, max_length=20, description="Kemendagri region code.")


class Attachment(_Model):
    """A file sent with the complaint (lampiran): a reference to stored bytes, never the bytes."""

    name: str = Field(max_length=255)
    content_type: str = Field(max_length=127)
    size: int = Field(ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    storage_ref: str | None = Field(None, max_length=500)
    state: AttachmentState = AttachmentState.STORED


class Revision(_Model):
    """One version of the complaint's text: the citizen edited their message (Telegram)."""

    native_id: str = Field(max_length=500, description="The channel id of this version.")
    at: AwareDatetime = Field(description="When the citizen wrote this version.")
    title: str = Field(max_length=200)
    body: str = Field(min_length=1, max_length=20000)


class Audit(_Model):
    """Lineage: which connector produced it, where the raw payload is kept, which gateway."""

    connector: str
    raw_ref: str | None = None
    gateway_version: str
    account: str
    decisions: dict[str, str] = Field(
        default_factory=dict,
        description="Which rule decided each derived field (classification, category, agency, "
        "region, incident_date); 'citizen' when the citizen chose it.",
    )


class Complaint(_Model):
    """One citizen complaint in the unified schema, version 1."""

    schema_version: Literal["1"] = SCHEMA_VERSION
    id: str = Field(pattern=r"^[0-9a-f]{32}$", description="hash(channel, account, native id).")
    tracking_code: str = Field(pattern=r"^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$")
    channel: str = Field(max_length=32)
    native_id: str = Field(max_length=500)
    received_at: AwareDatetime
    sent_at: AwareDatetime | None = None

    reporter: Reporter = Reporter()

    title: str = Field(max_length=200, description="Judul.")
    body: str = Field(min_length=1, max_length=20000, description="Isi laporan.")
    language: str = Field("id", max_length=8)
    incident_date: date | None = Field(None, description="Tanggal kejadian.")
    location: Location | None = None
    attachments: tuple[Attachment, ...] = ()

    classification: Classification = Classification.PENGADUAN
    category: str | None = Field(None, max_length=100)
    agency: str | None = Field(None, max_length=200, description="Instansi tujuan.")
    confidential: bool = Field(False, description="Rahasia: content is not public.")

    thread_of: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    duplicate_of: str | None = Field(None, pattern=r"^[0-9a-f]{32}$")
    cluster_id: str | None = Field(None, max_length=64)

    revisions: tuple[Revision, ...] = Field(
        (),
        description="Every version of the text, oldest first, once the citizen edited the "
        "message; title and body are the newest. Empty when never edited.",
    )

    audit: Audit

    def to_json(self) -> bytes:
        """The wire form on Kafka (compact JSON, UTF-8)."""
        return self.model_dump_json(exclude_none=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Complaint:
        """Parse and validate the wire form; raises ``pydantic.ValidationError``.

        Control characters are stripped as for any input, but one scan of the JSON text
        replaces the walk over every string when it holds none (the sink's hot path: what
        the gateway published was stripped at intake)."""
        raw = data.encode() if isinstance(data, str) else data
        if not _may_hold_controls(raw):
            return cls.model_validate_json(raw, context=_NO_CONTROLS)
        return cls.model_validate_json(raw)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`Complaint` as published under ``config/``."""
    schema = Complaint.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://lapor-gateway/schemas/complaint.v1.schema.json"
    return schema



if __name__ == "__main__":  # python -m normalizer.schema > config/complaint.v1.schema.json
    import json
    import sys

    sys.stdout.write(json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=True) + "\n")
