"""Answering a complaint by email: the reply message and its SMTP delivery (aiosmtplib).

The acknowledgement's Message-ID is ``<TRACKING-CODE.complaint-id@our-domain>``, a status
notice's ``<TRACKING-CODE.complaint-id.KIND-HASH@our-domain>`` (one id per reply kind, the same
when a send is retried): when the citizen answers either, ``In-Reply-To``/``References`` name
the complaint without any lookup table (:func:`complaint_of`). Every message is threaded
(``In-Reply-To``, ``References``: a notice answers our acknowledgement, which answers the
citizen's message), carries the tracking code in its subject, and is marked
``Auto-Submitted: auto-replied`` (RFC 3834) so other robots do not answer it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

import aiosmtplib

from config.email import MailboxSettings
from errors import ChannelRejected, ChannelUnavailable, LaporError

_OUR_ID = re.compile(r"^[0-9a-z]{5}-[0-9a-z]{5}\.([0-9a-f]{32})(?:\.[0-9a-f]{12})?@(.+)$")
_SUBJECT_PREFIX = re.compile(r"^\s*((re|fwd?|aw|balas|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)
SUBJECT_MAX = 200
REFERENCES_KEPT = 10  # the newest ids of the thread (RFC 5322 3.6.4 allows trimming)
ACK = "ack"  # the reply kind of the acknowledgement (see gateway.replies)
FALLBACK_MARK = ">"  # "<kind>>email": a reply owed here for a complaint from another channel


def reply_message_id(tracking_code: str, complaint_id: str, domain: str,
                     kind: str = ACK) -> str:
    """Our reply's Message-ID (with brackets): the acknowledgement's, or one per other kind."""
    if kind.split(FALLBACK_MARK)[0] == ACK:
        return f"<{tracking_code}.{complaint_id}@{domain}>"
    suffix = hashlib.sha256(kind.encode()).hexdigest()[:12]
    return f"<{tracking_code}.{complaint_id}.{suffix}@{domain}>"


def answer_message_id(native_id: str, domain: str) -> str:
    """The Message-ID of our answer to a command email (the same if it is answered again)."""
    return f"<answer.{hashlib.sha256(native_id.encode()).hexdigest()[:24]}@{domain}>"


def complaint_of(message_id: str, domains: set[str]) -> str | None:
    """The complaint id in a normalised message id of one of our replies, or None."""
    match = _OUR_ID.match(message_id)
    if match is None or match.group(2) not in domains:
        return None
    return match.group(1)


def strip_reply_prefix(subject: str) -> str:
    """A subject without its ``Re:``/``Fwd:``/``Balas:`` prefixes."""
    return _SUBJECT_PREFIX.sub("", subject or "").strip()


def reply_subject(subject: str, tracking_code: str,
                  empty: str = "Laporan Anda telah diterima") -> str:
    """``Re: <their subject> [KODE]`` (or ``<empty> [KODE]`` when theirs was empty)."""
    base = strip_reply_prefix(subject)
    if tracking_code and tracking_code in base:
        return f"Re: {base}"[:SUBJECT_MAX]
    if not base:
        return f"{empty} [{tracking_code}]" if tracking_code else empty
    if not tracking_code:
        return f"Re: {base}"[:SUBJECT_MAX]
    return f"Re: {base[:SUBJECT_MAX - 20]} [{tracking_code}]"


def build_message(box: MailboxSettings, *, to: str, text: str, subject: str, message_id: str,
                  in_reply_to: str | None, references: str) -> EmailMessage:
    """One plain-text (UTF-8) email from the mailbox, threaded after ``in_reply_to`` (a
    normalised id, no brackets) and ``references`` (space-separated, no brackets)."""
    msg = EmailMessage()
    msg["From"] = formataddr((box.from_name, box.from_address))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(datetime.now(UTC))
    thread = [f"<{ref}>" for ref in references.split() if ref][-REFERENCES_KEPT:]
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
        if f"<{in_reply_to}>" not in thread:
            thread.append(f"<{in_reply_to}>")
    if thread:
        msg["References"] = " ".join(thread[-REFERENCES_KEPT:])
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content(text)
    return msg


def build_reply(box: MailboxSettings, *, to: str, text: str, tracking_code: str,
                complaint_id: str, subject: str, in_reply_to: str | None,
                references: str, kind: str = ACK) -> EmailMessage:
    """A reply about a complaint. The acknowledgement answers the citizen's message
    (``in_reply_to``); any other kind (a status notice) answers our acknowledgement, after the
    citizen's message, so mail clients show the whole story as one thread."""
    if kind.split(FALLBACK_MARK)[0] == ACK:
        return build_message(box, to=to, text=text, message_id=reply_message_id(
            tracking_code, complaint_id, box.domain), subject=reply_subject(subject, tracking_code),
            in_reply_to=in_reply_to, references=references)
    ack = reply_message_id(tracking_code, complaint_id, box.domain)[1:-1]
    thread = " ".join(filter(None, (references, in_reply_to)))
    return build_message(
        box, to=to, text=text, message_id=reply_message_id(tracking_code, complaint_id,
                                                           box.domain, kind),
        subject=reply_subject(subject, tracking_code, "Perkembangan laporan Anda"),
        in_reply_to=ack, references=thread)


async def send(box: MailboxSettings, message: EmailMessage, timeout_s: float) -> None:
    """Deliver ``message`` through the mailbox's SMTP server.

    Raises ``ChannelRejected`` (a refused recipient, a 5xx answer, no SMTP configured) or
    ``ChannelUnavailable`` (network, timeout, a 4xx answer).
    """
    if not box.smtp_host:
        raise ChannelRejected(f"email {box.from_address}: no smtp_host configured")
    login = box.smtp_login()
    try:
        await aiosmtplib.send(
            message, hostname=box.smtp_host, port=box.smtp_port, use_tls=box.smtp_ssl,
            start_tls=False if box.smtp_ssl else None,
            username=login[0] if login else None, password=login[1] if login else None,
            timeout=timeout_s)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise ChannelRejected(f"email: recipient refused: {_codes(exc)}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _by_code(exc.code, exc.message) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise ChannelUnavailable(f"email: SMTP {type(exc).__name__}: {exc}") from exc


def _codes(exc: aiosmtplib.SMTPRecipientsRefused) -> str:
    return ", ".join(str(r.code) for r in exc.recipients)


def _by_code(code: int, message: str) -> LaporError:
    if 400 <= code < 500:
        return ChannelUnavailable(f"email: SMTP {code} {message[:200]}")
    return ChannelRejected(f"email: SMTP {code} {message[:200]}")
