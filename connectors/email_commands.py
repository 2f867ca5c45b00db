"""``STATUS KODE`` and ``BATAL KODE`` by email: which messages are commands, not complaints.

An email has two places for words, so a command is recognised when

* the body (quotes and signature already removed) is a command: ``STATUS K7M2Q-9XD4T``,
  ``batal``; a missing code is taken from the subject (``Re: ... [K7M2Q-9XD4T]`` of our
  acknowledgement, or a subject that is a code);
* or the subject is a command and the body is empty, a tracking code, or anything when the
  subject names a valid code (``Subject: Status K7M2Q-9XD4T`` with a polite line);
* so ``Subject: K7M2Q-9XD4T`` with ``status`` in the body, and the other way round, both ask.

``Subject: Status jalan`` with a complaint in the body stays a complaint: a subject command
needs a real tracking code (or nothing else to read). Pure helpers, no I/O.
"""

from __future__ import annotations

import re

from connectors.commands import parse_text_command
from connectors.email_smtp import strip_reply_prefix
from normalizer.ids import parse_tracking_code

_BRACKETED_CODE = re.compile(r"\[\s*([0-9A-Za-z]{5}-[0-9A-Za-z]{5})\s*\]")


def code_in_subject(subject: str) -> str | None:
    """The tracking code a subject names: ``[KODE]`` (our replies) or the whole subject."""
    match = _BRACKETED_CODE.search(subject)
    return parse_tracking_code(match.group(1) if match else subject)


def mail_command(subject: str, body: str) -> tuple[str, str] | None:
    """``("status", "K7M2Q-9XD4T")``, ``("withdraw", "")`` (the sender's newest), or None
    when the message is a complaint (or a follow-up)."""
    subject = strip_reply_prefix(subject)
    body = body.strip().rstrip(".!?").strip()
    in_body = parse_text_command(body)
    if in_body is not None:
        action, code = in_body
        return action, code or _subject_code(subject)
    in_subject = parse_text_command(subject)
    if in_subject is not None:
        action, code = in_subject
        if not body:
            return action, code
        if code and parse_tracking_code(code):
            return action, code
        if not code and parse_tracking_code(body):
            return action, body
    return None


def _subject_code(subject: str) -> str:
    command = parse_text_command(subject)
    if command is not None and command[1]:
        return command[1]
    return code_in_subject(subject) or ""
