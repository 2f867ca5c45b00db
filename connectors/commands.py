"""Text commands on channels without bot commands (SMS, WhatsApp, Messenger, Instagram):
``STATUS KODE`` asks for a complaint's public status, ``BATAL KODE`` withdraws one's own
complaint (``BATAL`` alone: the sender's newest). Pure helpers, no I/O.

A command is the keyword and at most one code-like word, any case, an optional leading ``/``
(``STATUS jalan rusak ...`` is a complaint that happens to start with the word, not a query).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

COMMAND_RE = re.compile(
    r"^\s*/?(?P<word>STATUS|BATAL)\s*[:#]?\s*(?P<code>[A-Za-z0-9._-]{0,20})\s*$", re.IGNORECASE)
#: What each keyword means.
MEANINGS = {"status": "status", "batal": "withdraw"}


def parse_text_command(text: str) -> tuple[str, str] | None:
    """``("status", "ABCDE-12345")``, ``("withdraw", "")``, or None for anything else."""
    match = COMMAND_RE.match(text)
    if match is None:
        return None
    return MEANINGS[match.group("word").lower()], match.group("code")


def status_text(code: str, status: Mapping[str, object] | None) -> str:
    """The answer to ``STATUS KODE`` in Bahasa Indonesia: the public status only, never the
    title, the content or the reporter (``public_status`` withholds them already)."""
    if status is None:
        return (f"Kode {code or '(kosong)'} tidak ditemukan. Periksa kembali kode pelacakan "
                "Anda, contoh: STATUS ABCDE-12345.")
    label = status.get("status_label") or status.get("status")
    text = f"Laporan {status.get('tracking_code', code)}: {label}."
    received = str(status.get("received_at") or "")[:10]
    if received:
        text += f" Diterima {received}."
    if status.get("agency"):
        text += f" Instansi: {status['agency']}."
    return text
