"""The partner JSON API: ``POST /api/v1/complaints`` for agency and partner apps.

Authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, checked in constant
time against ``[connectors.api] keys``; the partner's name becomes the message's account.
Idempotency: the partner's ``external_id`` (else the ``Idempotency-Key`` header, else a hash of
the body) is the native id, so a retried POST returns the same id and tracking code.
Answers: ``202 {id, tracking_code, status_url, duplicate}``; ``401`` for a missing or wrong key;
``422 {error, fields}`` naming every invalid field; ``413`` over the size limit; ``503`` with
``Retry-After`` when the store is unavailable (nothing was stored: retry).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.settings import ApiSettings
from connectors.base import BaseConnector, RawMessage, Sender
from errors import StoreUnavailable, ValidationFailed
from normalizer.schema import Classification, Location


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartnerReporter(_Strict):
    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=40)
    handle: str | None = Field(None, max_length=200)
    user_id: str | None = Field(None, max_length=200)


class PartnerLocation(_Strict):
    text: str | None = Field(None, max_length=500)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class PartnerAttachment(_Strict):
    name: str = Field(max_length=255)
    content_type: str | None = Field(None, max_length=127)
    data_base64: str


class PartnerComplaint(_Strict):
    """The body of ``POST /api/v1/complaints``."""

    external_id: str | None = Field(None, min_length=1, max_length=200)
    title: str | None = Field(None, max_length=200)
    body: str = Field(min_length=1, max_length=20000)
    incident_date: date | None = None
    location: PartnerLocation | None = None
    agency: str | None = Field(None, max_length=200)
    category: str | None = Field(None, max_length=100)
    classification: Classification = Classification.PENGADUAN
    reporter: PartnerReporter = PartnerReporter()
    anonymous: bool = False
    confidential: bool = False
    sent_at: datetime | None = None
    attachments: list[PartnerAttachment] = Field(default_factory=list)


def problem(status: int, error: str, **extra: Any) -> web.Response:
    """A JSON error answer ``{"error": ..., ...}``."""
    return web.json_response({"error": error, **extra}, status=status,
                             dumps=lambda o: orjson.dumps(o).decode())


def match_key(request: web.Request, keys: list[tuple[str, bytes]]) -> str | None:
    """The name whose key the request carries (``Authorization: Bearer`` or ``X-API-Key``),
    or None. Compared in constant time against every key."""
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else \
        request.headers.get("X-API-Key", "")
    offered = given.encode("utf-8", "surrogateescape")  # undecodable bytes stay bytes
    found = None
    for name, key in keys:
        if hmac.compare_digest(offered, key) and given:
            found = name
    return found


class ApiConnector(BaseConnector):
    """Partner apps submitting complaints as JSON."""

    name: ClassVar[str] = "api"

    def __init__(self, settings: ApiSettings, *, max_body_bytes: int) -> None:
        super().__init__()
        self._settings = settings
        self._max_body = max_body_bytes
        self._keys = [(partner, key.get_secret_value().encode())
                      for partner, key in settings.keys.items()]

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.post("/api/v1/complaints", self.receive)]

    def authenticate(self, request: web.Request) -> str | None:
        """The partner whose key the request carries, or None. Constant time over all keys."""
        return match_key(request, self._keys)

    async def receive(self, request: web.Request) -> web.Response:
        partner = self.authenticate(request)
        if partner is None:
            return problem(401, "unauthorized", detail="missing or wrong API key")
        if not self.accepting:
            return problem(503, "paused", detail="the API connector is paused")
        if request.content_length is not None and request.content_length > self._max_body:
            return problem(413, "too_large", limit_bytes=self._max_body)
        if request.content_type != "application/json":
            return problem(415, "unsupported_media_type", detail="send application/json")
        body = await request.read()
        try:
            complaint = PartnerComplaint.model_validate_json(body)
        except ValidationError as exc:
            fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()}
            return problem(422, "validation_failed", fields=fields)
        if len(complaint.attachments) > self._settings.max_attachments:
            return problem(422, "validation_failed", fields={
                "attachments": f"at most {self._settings.max_attachments} attachments"})
        idempotency_key = request.headers.get("Idempotency-Key", "")
        if idempotency_key and not (idempotency_key.isprintable() and idempotency_key.isascii()
                                    and len(idempotency_key) <= 200):
            return problem(422, "validation_failed", fields={
                "Idempotency-Key": "at most 200 printable ASCII characters"})
        native_id = (complaint.external_id or idempotency_key
                     or "sha256:" + hashlib.sha256(body).hexdigest())
        try:
            attachments = []
            for index, item in enumerate(complaint.attachments):
                try:
                    data = base64.b64decode(item.data_base64, validate=True)
                except (binascii.Error, ValueError):
                    return problem(422, "validation_failed", fields={
                        f"attachments.{index}.data_base64": "not valid base64"})
                attachments.append(await self.intake.store_attachment(
                    name=item.name, declared_type=item.content_type, data=data))
            result = await self.submit(self._to_raw(partner, native_id, complaint, body,
                                                    tuple(attachments)))
        except ValidationFailed as exc:
            return problem(422, "validation_failed", detail=str(exc), fields=exc.fields)
        except StoreUnavailable:
            return web.json_response({"error": "unavailable", "detail": "not stored; retry"},
                                     status=503, headers={"Retry-After": "5"})
        return web.json_response(
            {"id": result.complaint_id, "tracking_code": result.tracking_code,
             "status_url": f"/api/v1/complaints/{result.tracking_code}",
             "duplicate": result.duplicate},
            status=202,
        )

    def _to_raw(self, partner: str, native_id: str, c: PartnerComplaint, body: bytes,
                attachments: tuple[Any, ...]) -> RawMessage:
        location = None
        if c.location is not None:
            location = Location(text=c.location.text, lat=c.location.lat, lon=c.location.lon)
        return RawMessage(
            channel="api",
            account=partner,
            native_id=native_id,
            received_at=datetime.now(UTC),
            sent_at=c.sent_at if c.sent_at and c.sent_at.tzinfo else None,
            sender=Sender(name=c.reporter.name, email=c.reporter.email, phone=c.reporter.phone,
                          handle=c.reporter.handle, channel_user_id=c.reporter.user_id),
            title=c.title,
            text=c.body,
            incident_date=c.incident_date.isoformat() if c.incident_date else None,
            location=location,
            agency=c.agency,
            category=c.category,
            classification=c.classification,
            anonymous=c.anonymous,
            confidential=c.confidential,
            attachments=attachments,
            connector=self.name,
            raw_payload=body,
            raw_content_type="application/json",
        )
