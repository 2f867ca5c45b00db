"""The citizen complaint form: ``GET /`` shows it, ``POST /lapor`` receives it.

Bahasa Indonesia first. The form carries a CSRF token (double-submit cookie, HMAC-signed) and a
random ``submission_id`` that is the message's native id, so a double click or a browser
refresh of the POST is the same complaint, not two. Pages are rendered by the ``render``
callable the gateway injects.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import orjson
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from config.settings import WebformSettings
from connectors.base import Attachment, BaseConnector, RawMessage, Sender
from errors import StoreUnavailable, ValidationFailed
from normalizer.normalize import indonesian_today, normalize_email, normalize_phone
from normalizer.schema import Classification, Location

Render = Callable[[str, Mapping[str, Any]], str]

CSRF_COOKIE = "lapor_csrf"
CSRF_MAX_AGE_S = 24 * 3600  # a form left open for a day must be reloaded
FIELD_MAX_BYTES = 64 * 1024  # any single text field
SUBMISSION_ID_LEN = 32
LIMITS = {"judul": 200, "isi": 20000, "lokasi": 500, "instansi": 200, "nama": 200,
          "kontak": 320}
BODY_MIN = 10  # characters: "jalan rusak" is the shortest useful complaint


class CsrfGuard:
    """Double-submit CSRF tokens: the cookie holds a nonce, the form its signed copy."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self) -> tuple[str, str]:
        """A new ``(cookie_value, form_token)`` pair."""
        nonce = f"{int(time.time())}.{secrets.token_urlsafe(16)}"
        return nonce, f"{nonce}.{self._sign(nonce)}"

    def verify(self, cookie: str | None, token: str | None) -> bool:
        """Whether ``token`` was issued by us, for this cookie, less than a day ago."""
        if not cookie or not token:
            return False
        nonce, _, signature = token.rpartition(".")
        # Compare bytes: compare_digest refuses non-ASCII str, and input is untrusted.
        if not hmac.compare_digest(_bytes(signature), self._sign(nonce).encode()):
            return False
        if not hmac.compare_digest(_bytes(nonce), _bytes(cookie)):
            return False
        issued = nonce.split(".", 1)[0]
        return issued.isdigit() and time.time() - int(issued) < CSRF_MAX_AGE_S

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, _bytes(nonce), hashlib.sha256).hexdigest()[:32]


def _bytes(text: str) -> bytes:
    """Untrusted header/form text as bytes; aiohttp keeps undecodable bytes as surrogates."""
    return text.encode("utf-8", "surrogateescape")


@dataclass
class _Submission:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)


class WebformConnector(BaseConnector):
    """The web form channel."""

    name: ClassVar[str] = "webform"

    def __init__(self, settings: WebformSettings, *, render: Render, csrf: CsrfGuard,
                 max_body_bytes: int, secure_cookies: bool) -> None:
        super().__init__()
        self._settings = settings
        self._render = render
        self._csrf = csrf
        self._max_body = max_body_bytes
        self._secure = secure_cookies

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.get("/", self.show_form), web.post("/lapor", self.receive)]

    async def show_form(self, request: web.Request) -> web.Response:
        return self._form_page({}, {}, status=200)

    def _form_page(self, values: Mapping[str, str], errors: Mapping[str, str], *,
                   status: int) -> web.Response:
        cookie, token = self._csrf.issue()
        values = dict(values)
        values.setdefault("submission_id", secrets.token_hex(SUBMISSION_ID_LEN // 2))
        html = self._render("form.html", {
            "values": values, "errors": errors, "csrf_token": token,
            "max_files": self._settings.max_files,
            "max_file_mb": self._settings.max_file_bytes // (1024 * 1024),
            "classifications": [c.value for c in Classification],
            "today": indonesian_today(datetime.now(UTC)).isoformat(),
        })
        response = web.Response(text=html, content_type="text/html", status=status)
        response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="Strict",
                            secure=self._secure, max_age=CSRF_MAX_AGE_S, path="/")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def receive(self, request: web.Request) -> web.Response:
        if not self.accepting:
            raise web.HTTPServiceUnavailable(text="Formulir sedang tidak menerima laporan.")
        if request.content_length is not None and request.content_length > self._max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=self._max_body,
                                                actual_size=request.content_length)
        if request.content_type not in ("multipart/form-data",
                                        "application/x-www-form-urlencoded"):
            raise web.HTTPUnsupportedMediaType(text="Kirim formulir sebagai multipart/form-data.")
        try:
            submission = await self._read(request)
        except ValidationFailed as exc:
            return self._form_page({}, exc.fields, status=400)
        values = submission.fields
        if not self._csrf.verify(request.cookies.get(CSRF_COOKIE), values.get("csrf_token")):
            return self._form_page(
                _public_values(values),
                {"form": "Sesi formulir kedaluwarsa atau tidak sah. Silakan kirim ulang."},
                status=403,
            )
        errors = validate_fields(values)
        if len(submission.files) > self._settings.max_files:
            errors["lampiran"] = f"Paling banyak {self._settings.max_files} berkas."
        if errors:
            return self._form_page(_public_values(values), errors, status=422)
        try:
            attachments = [
                await self.intake.store_attachment(name=name, declared_type=ctype, data=data)
                for name, ctype, data in submission.files
            ]
            result = await self.submit(self._to_raw(values, attachments, bytes(submission.raw)))
        except ValidationFailed as exc:
            return self._form_page(_public_values(values), exc.fields or {"form": str(exc)},
                                   status=422)
        except StoreUnavailable:
            raise web.HTTPServiceUnavailable(
                text="Sistem sedang sibuk. Laporan Anda belum tersimpan; silakan kirim ulang.",
                headers={"Retry-After": "5"},
            ) from None
        html = self._render("confirmation.html", {
            "tracking_code": result.tracking_code, "duplicate": result.duplicate,
        })
        return web.Response(text=html, content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def _read(self, request: web.Request) -> _Submission:
        try:
            return await self._parse(request)
        except (ValueError, AssertionError, HttpProcessingError) as exc:
            # aiohttp's multipart reader refuses a truncated or malformed body this way.
            raise ValidationFailed(f"malformed form body: {type(exc).__name__}",
                                   {"form": "Format formulir tidak sah."}) from exc

    async def _parse(self, request: web.Request) -> _Submission:
        submission = _Submission()
        if request.content_type == "application/x-www-form-urlencoded":  # a form with no file
            form = await request.post()
            submission.fields = {k: v for k, v in form.items() if isinstance(v, str)}
            submission.raw.extend(_audit_record(submission).encode())
            return submission
        reader = await request.multipart()
        total = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValidationFailed("nested multipart", {"form": "Format formulir tidak sah."})
            limit = (self._settings.max_file_bytes if part.filename is not None
                     else FIELD_MAX_BYTES)
            data = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                data.extend(chunk)
                total += len(chunk)
                if total > self._max_body:
                    raise web.HTTPRequestEntityTooLarge(max_size=self._max_body,
                                                        actual_size=total)
                if len(data) > limit:
                    label = part.filename or part.name or "?"
                    raise ValidationFailed("part too large", {
                        "lampiran" if part.filename is not None else (part.name or "form"):
                        f"{label} melebihi batas {limit // (1024 * 1024) or limit} "
                        f"{'MB' if limit >= 1024 * 1024 else 'byte'}."})
            if part.filename is not None:
                if part.filename or data:  # an empty file input sends an empty part
                    submission.files.append((part.filename, part.headers.get("Content-Type"),
                                             bytes(data)))
                continue
            try:
                submission.fields[part.name or ""] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationFailed("field is not UTF-8", {
                    part.name or "form": "Teks tidak dapat dibaca (bukan UTF-8)."}) from None
        submission.raw.extend(_audit_record(submission).encode())
        return submission

    def _to_raw(self, values: Mapping[str, str], attachments: list[Attachment],
                raw: bytes) -> RawMessage:
        contact = values.get("kontak", "").strip()
        email = normalize_email(contact) if "@" in contact else None
        phone = None if email else normalize_phone(contact)
        lokasi = values.get("lokasi", "").strip()
        return RawMessage(
            channel="webform",
            account=self._settings.account,
            native_id=values["submission_id"],
            received_at=datetime.now(UTC),
            sender=Sender(name=values.get("nama", "").strip() or None, email=email, phone=phone),
            title=values.get("judul", "").strip() or None,
            text=values.get("isi", ""),
            incident_date=values.get("tanggal_kejadian", "").strip() or None,
            location=Location(text=lokasi) if lokasi else None,
            agency=values.get("instansi", "").strip() or None,
            classification=Classification(values.get("klasifikasi") or "pengaduan"),
            anonymous=values.get("anonim") in ("1", "on", "true"),
            confidential=values.get("rahasia") in ("1", "on", "true"),
            attachments=tuple(attachments),
            connector=self.name,
            raw_payload=raw,
            raw_content_type="application/json",
        )


def validate_fields(values: Mapping[str, str]) -> dict[str, str]:
    """Per-field messages in Bahasa Indonesia; empty when the form is valid."""
    errors: dict[str, str] = {}
    for name, limit in LIMITS.items():
        if len(values.get(name, "")) > limit:
            errors[name] = f"Paling banyak {limit} karakter."
    body = values.get("isi", "").strip()
    if not body:
        errors["isi"] = "Isi laporan wajib diisi."
    elif len(body) < BODY_MIN:
        errors["isi"] = f"Isi laporan terlalu pendek (minimal {BODY_MIN} karakter)."
    if not values.get("judul", "").strip():
        errors["judul"] = "Judul laporan wajib diisi."
    submission_id = values.get("submission_id", "")
    if len(submission_id) != SUBMISSION_ID_LEN or not all(
        c in "0123456789abcdef" for c in submission_id
    ):
        errors["form"] = "Formulir tidak lengkap. Muat ulang halaman lalu kirim lagi."
    if values.get("klasifikasi") and values["klasifikasi"] not in {c.value for c in Classification}:
        errors["klasifikasi"] = "Pilih jenis laporan dari daftar."
    when = values.get("tanggal_kejadian", "").strip()
    if when:
        try:
            if date.fromisoformat(when) > indonesian_today(datetime.now(UTC)):
                errors["tanggal_kejadian"] = "Tanggal kejadian tidak boleh di masa depan."
        except ValueError:
            errors["tanggal_kejadian"] = "Tanggal kejadian tidak valid (format TTTT-BB-HH)."
    contact = values.get("kontak", "").strip()
    if contact:
        valid = normalize_email(contact) if "@" in contact else normalize_phone(contact)
        if valid is None:
            errors["kontak"] = "Tulis alamat email atau nomor HP yang benar (mis. 0812...)."
    return errors


def _public_values(values: Mapping[str, str]) -> dict[str, str]:
    """Values to show again on the form (never the CSRF token)."""
    return {k: v for k, v in values.items() if k != "csrf_token"}


def _audit_record(submission: _Submission) -> str:
    """The submission as received, for audit: the fields and each file's name, type, size."""
    record = {
        "fields": _public_values(submission.fields),
        "files": [{"name": n, "content_type": t, "size": len(d)} for n, t, d in submission.files],
    }
    return orjson.dumps(record).decode()
