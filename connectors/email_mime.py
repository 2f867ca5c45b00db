"""Reading one RFC 5322 message: headers, the body as clean text, attachments, and whether it
is automatic mail (auto-reply, bounce, mailing list) rather than a citizen's complaint.

No I/O; called from the mailbox worker thread. Parsing uses :mod:`email` with the ``compat32``
policy (it never raises on a malformed header) and decodes everything here:

* Body: ``multipart/alternative`` prefers ``text/plain``, else HTML converted to text;
  ``multipart/mixed``/``related`` join their text parts; a nested ``message/rfc822`` (a
  forwarded complaint) is appended with its sender, date and subject, its attachments kept.
* Charsets: a declared single-byte charset is tried after UTF-8 (mail labelled ``iso-8859-1``
  is often UTF-8), ``iso-8859-1``/``ascii`` are read as ``windows-1252`` (WHATWG), an unknown or
  wrong label falls back to UTF-8 then windows-1252, never an exception.
* Headers: RFC 2047 encoded words (any charset, mislabeled too) and raw 8-bit headers.
* Attachments and inline images: decoded bytes with their declared type; the intake sniffs the
  real type. Over ``max_bytes`` or beyond ``max_count`` they are listed as skipped.
* MIME bombs: more than :data:`MAX_PARTS` boundary lines, or nesting deeper than the parser
  can recurse, raise :class:`errors.ValidationFailed` (the connector keeps a dead letter);
  forwards nested beyond :data:`MAX_DEPTH` are not read.
"""

from __future__ import annotations

import codecs
import email
import email.errors
import email.header
import email.utils
import mimetypes
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32

from errors import ValidationFailed
from normalizer.email_text import clean_email_text, html_to_text

_MSGID = re.compile(r"<([^<>\s]{1,500})>")
_ANGLE_ADDR = re.compile(r"<([^<>\s@()\"]{1,200}@[^<>\s@()\"]{1,255})>")
#: Labels that in practice mean windows-1252 (WHATWG Encoding Standard).
_CP1252_LABELS = frozenset({"us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1",
                            "iso8859-1", "windows-1252", "cp1252", "iso-8859-15"})
BODY_TYPES = frozenset({"text/plain", "text/html"})  # other text/* parts are files
MAX_DEPTH = 8  # nested forwards beyond this are not read (a mail bomb, not a complaint)
#: Boundary lines (``\n--``) a message may hold before it is refused unparsed: each MIME part
#: costs the parser about 300 bytes of memory, so 40 MiB of tiny parts would take gigabytes.
MAX_PARTS = 1000


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Text from ``data`` whatever its (possibly wrong or missing) charset label."""
    label = (declared or "").strip().strip('"').lower()
    try:
        codec = codecs.lookup(label).name if label else None
    except (LookupError, ValueError):  # unknown, or not a name at all (a NUL byte in it)
        codec = None
    single_byte = codec is None or label in _CP1252_LABELS or codec.startswith(
        ("iso8859", "cp125", "latin", "ascii", "koi8", "mac-"))
    order = (["utf-8", codec] if single_byte else [codec, "utf-8"])
    for name in order:
        if name is None:
            continue
        if name in ("ascii", "latin-1", "iso8859-1", "iso8859-15"):
            name = "cp1252"
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("cp1252", errors="replace")


def decode_header(value: str | email.header.Header | None) -> str:
    """A header's text: RFC 2047 encoded words decoded, raw 8-bit bytes read as UTF-8 or
    windows-1252, folding removed. (``compat32`` gives a raw 8-bit header as a ``Header``
    in the ``unknown-8bit`` charset.)"""
    if value is None or value == "":
        return ""
    try:
        chunks = email.header.decode_header(value)
    except (ValueError, email.errors.HeaderParseError):
        chunks = [(str(value), None)]
    parts: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes) and charset is None:
            # Unencoded text between encoded words comes back raw-unicode-escaped.
            chunk = chunk.decode("raw-unicode-escape")
        if isinstance(chunk, str):
            parts.append(decode_bytes(chunk.encode("utf-8", "surrogateescape"), None)
                         if _has_surrogates(chunk) else chunk)
        else:
            parts.append(decode_bytes(chunk, charset))
    text = "".join(parts)
    return re.sub(r"\s*\r?\n\s*", " ", text).strip()


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def message_ids(value: str | email.header.Header | None) -> tuple[str, ...]:
    """Normalised message ids (``local@domain``, lower case, no brackets) in a header."""
    text = decode_header(value)
    return tuple(found.lower() for found in _MSGID.findall(text)) if text else ()


@dataclass(frozen=True, slots=True)
class MailPart:
    """An attachment or inline image as the message declares it."""

    name: str
    declared_type: str
    data: bytes
    inline: bool = False


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """What the connector needs from one message."""

    message_id: str | None
    subject: str
    from_name: str | None
    from_address: str | None
    reply_to: str | None
    date: datetime | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    text: str
    attachments: tuple[MailPart, ...] = ()
    skipped: tuple[str, ...] = ()
    automatic: str | None = None  # why it is not a complaint (auto-reply, bounce, list)

    @property
    def answer_to(self) -> str | None:
        """Where a reply goes: ``Reply-To`` when given, else ``From``."""
        return self.reply_to or self.from_address


@dataclass
class _Collected:
    texts: list[str] = field(default_factory=list)
    forwards: list[str] = field(default_factory=list)
    parts: list[MailPart] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _h(msg: Message, name: str) -> str:
    """A header decoded to text ("" when absent)."""
    return decode_header(msg.get(name))


def automatic_reason(msg: Message) -> str | None:
    """Why ``msg`` is machine mail and not a complaint, or None (RFC 3834, RFC 3464, RFC 2369)."""
    auto = _h(msg, "Auto-Submitted").lower()
    if auto and not auto.startswith("no"):
        return f"auto-submitted ({auto.split(';')[0]})"
    ctype = msg.get_content_type()
    report = msg.get_param("report-type")
    report_type = report.lower() if isinstance(report, str) else ""
    if ctype == "multipart/report" and report_type == "delivery-status":
        return "delivery status notification (bounce)"
    if ctype == "multipart/report":
        return f"report ({report_type or 'unknown'})"
    sender = _h(msg, "From").lower()
    if "mailer-daemon@" in sender or sender.startswith("mailer-daemon") or (
            "postmaster@" in sender and _h(msg, "Return-Path") == "<>"):
        return "delivery status notification (bounce)"
    precedence = _h(msg, "Precedence").lower()
    if precedence in ("bulk", "list", "junk", "auto_reply"):
        return f"precedence {precedence}"
    if msg.get("List-Id") is not None or msg.get("List-Unsubscribe") is not None:
        return "mailing list (List-Id)"
    for header in ("X-Autoreply", "X-Autorespond", "X-Auto-Response"):
        if msg.get(header) is not None:
            return f"auto-reply ({header})"
    if _h(msg, "X-Auto-Response-Suppress").lower() in ("all", "oof"):
        return "auto-reply (X-Auto-Response-Suppress)"
    return None


def _address(value: str | email.header.Header | None) -> tuple[str | None, str | None]:
    """``(display name, address)`` of the first address in a header. Split before decoding:
    an encoded display name may hold a comma ("Santoso, Budi")."""
    if value is None:
        return None, None
    text = value if isinstance(value, str) else decode_header(value)
    for name, address in email.utils.getaddresses([text]):
        if "@" in address:
            return (decode_header(name) or None), address.strip().lower()
    # A display name the address parser cannot read (an unbalanced "(" in it, e.g. raw
    # bytes read as windows-1252) must not cost the citizen the address we answer to.
    angle = _ANGLE_ADDR.search(text)
    if angle is not None:
        name = text[: angle.start()].strip().strip('"').strip()
        return (decode_header(name) or None), angle.group(1).lower()
    return None, None


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    text = decode_bytes(data, part.get_content_charset())
    if part.get_content_type() == "text/html":
        return html_to_text(text)
    return text.replace("\r\n", "\n")


def _keep(part: Message, out: _Collected, max_bytes: int, max_count: int) -> None:
    filename = decode_header(part.get_filename()) or None
    ctype = part.get_content_type()
    if not filename:
        ext = mimetypes.guess_extension(ctype) or ".bin"
        filename = f"lampiran-{len(out.parts) + len(out.skipped) + 1}{ext}"
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    if not data:
        return
    if len(data) > max_bytes or len(out.parts) >= max_count:
        out.skipped.append(filename)
        return
    out.parts.append(MailPart(filename, ctype, data,
                              inline=part.get_content_disposition() != "attachment"))


def _collect(part: Message, out: _Collected, max_bytes: int, max_count: int,
             depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        return
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            out.forwards.append(_forward(inner[0], out, max_bytes, max_count, depth + 1))
        return
    if part.is_multipart():
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        if ctype == "multipart/alternative":
            chosen = _preferred(children)
            for child in children:
                if child is chosen:
                    _collect(child, out, max_bytes, max_count, depth + 1)
                else:  # the other versions: only their images and files
                    sink = _Collected(parts=out.parts, skipped=out.skipped)
                    _collect(child, sink, max_bytes, max_count, depth + 1)
            return
        for child in children:
            _collect(child, out, max_bytes, max_count, depth + 1)
        return
    if ctype in BODY_TYPES and part.get_content_disposition() != "attachment":
        out.texts.append(_text_of(part))
    else:  # files, images, calendars, vCards...: kept if the intake accepts their type
        _keep(part, out, max_bytes, max_count)


def _preferred(children: list[Message]) -> Message | None:
    """The version of a multipart/alternative to read: non-empty text/plain, else HTML,
    else the richest (last) one."""
    for child in children:
        if child.get_content_type() == "text/plain" and _text_of(child).strip():
            return child
    for child in children:
        if child.get_content_type() == "text/html":
            return child
    for child in reversed(children):
        if child.is_multipart():
            return child
    return children[-1] if children else None


def _forward(inner: Message, out: _Collected, max_bytes: int, max_count: int,
             depth: int) -> str:
    nested = _Collected(parts=out.parts, skipped=out.skipped)
    _collect(inner, nested, max_bytes, max_count, depth)
    name, address = _address(inner.get("From"))
    who = f"{name} <{address}>" if name and address else (address or name or "")
    lines = ["---------- Pesan diteruskan ----------"]
    if who:
        lines.append(f"Dari: {who}")
    if _h(inner, "Date"):
        lines.append(f"Tanggal: {_h(inner, 'Date')}")
    if _h(inner, "Subject"):
        lines.append(f"Subjek: {_h(inner, 'Subject')}")
    body = _body(nested)
    return "\n".join(lines) + ("\n\n" + body if body else "")


def _body(collected: _Collected) -> str:
    own = clean_email_text("\n\n".join(t for t in collected.texts if t.strip()))
    return "\n\n".join(x for x in [own, *collected.forwards] if x.strip())


def parse_mail(raw: bytes, *, max_attachment_bytes: int, max_attachments: int) -> ParsedMail:
    """Parse one message's bytes (as fetched with ``BODY.PEEK[]``).

    Raises :class:`ValidationFailed` for a MIME bomb: more than :data:`MAX_PARTS` boundary
    lines, or parts nested deeper than the parser's recursion allows."""
    boundaries = raw.count(b"\n--")
    if boundaries > MAX_PARTS:
        raise ValidationFailed(f"MIME bomb: {boundaries} boundary lines (at most {MAX_PARTS} "
                               "parts are read)")
    try:
        return _parse(raw, max_attachment_bytes, max_attachments)
    except RecursionError as exc:
        raise ValidationFailed("MIME bomb: parts nested too deeply to parse") from exc


def _parse(raw: bytes, max_attachment_bytes: int, max_attachments: int) -> ParsedMail:
    msg = email.message_from_bytes(raw, policy=compat32)
    from_name, from_address = _address(msg.get("From"))
    _, reply_to = _address(msg.get("Reply-To"))
    collected = _Collected()
    automatic = automatic_reason(msg)
    if automatic is None:
        _collect(msg, collected, max_attachment_bytes, max_attachments)
    ids = message_ids(msg.get("Message-ID"))
    return ParsedMail(
        message_id=ids[0] if ids else None,
        subject=decode_header(msg.get("Subject")),
        from_name=from_name,
        from_address=from_address,
        reply_to=reply_to,
        date=_date(_h(msg, "Date")),
        in_reply_to=message_ids(msg.get("In-Reply-To")),
        references=message_ids(msg.get("References")),
        text=_body(collected),
        attachments=tuple(collected.parts),
        skipped=tuple(collected.skipped),
        automatic=automatic,
    )
