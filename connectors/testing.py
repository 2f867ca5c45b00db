"""Test doubles of the connector interfaces (``FakeIntake``), shipped for connector tests."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping

from connectors.base import IntakeResult
from errors import AttachmentRejected, StoreUnavailable
from normalizer.ids import complaint_id, parse_tracking_code, tracking_code
from normalizer.media import safe_filename, sniff_content_type
from normalizer.raw import RawMessage, sender_key
from normalizer.schema import Attachment


class FakeIntake:
    """An in-memory :class:`connectors.base.Intake` with the real id, code and dedup rules.

    ``messages`` holds every accepted message; ``fail_next`` makes the next submits raise
    :class:`StoreUnavailable` (to test that connectors then leave the message
    un-acknowledged); ``attachments`` maps sha256 to stored bytes.
    """

    def __init__(self) -> None:
        self.messages: dict[str, RawMessage] = {}
        self.attachments: dict[str, bytes] = {}
        self.fail_next = 0
        self.submitted = asyncio.Event()
        self.cursors: dict[str, str] = {}
        self.dead_letters: list[tuple[str, str, str, bytes]] = []
        self.deliveries: dict[tuple[str, str], str] = {}
        self.withdrawals: list[tuple[str, str, str | None, str | None]] = []
        self._senders: dict[tuple[str, str, str], list[tuple[float, str]]] = {}

    async def submit(self, raw: RawMessage) -> IntakeResult:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise StoreUnavailable("fake intake told to fail")
        cid = complaint_id(raw.channel, raw.account, raw.native_id)
        duplicate = cid in self.messages
        if not duplicate:
            self.messages[cid] = raw
            key = sender_key(raw)
            if key is not None:
                self._senders.setdefault((raw.channel, raw.account, key), []).append(
                    (time.monotonic(), cid))
        self.submitted.set()
        return IntakeResult(cid, tracking_code(cid), duplicate)

    async def store_attachment(self, *, name: str, declared_type: str | None,
                               data: bytes) -> Attachment:
        kind = sniff_content_type(data[:64], name)
        if kind is None:
            raise AttachmentRejected("attachment type not accepted", {"lampiran": name})
        digest = hashlib.sha256(data).hexdigest()
        self.attachments[digest] = data
        return Attachment(name=safe_filename(name), content_type=kind, size=len(data),
                          sha256=digest, storage_ref=f"file:attachments/{digest[:2]}/{digest}")

    async def recent_complaint(self, *, channel: str, account: str, sender_key: str,
                               within_s: float) -> IntakeResult | None:
        entries = self._senders.get((channel, account, sender_key), [])
        for when, cid in reversed(entries):
            if time.monotonic() - when <= within_s:
                return IntakeResult(cid, tracking_code(cid), True)
        return None

    async def withdraw(self, *, channel: str, account: str, sender_key: str | None,
                       typed_code: str | None) -> str:
        """Records the request in ``withdrawals``; answers ``withdraw:<code>``."""
        self.withdrawals.append((channel, account, sender_key, typed_code))
        return f"withdraw:{typed_code or ''}"

    async def load_cursor(self, name: str) -> str | None:
        return self.cursors.get(name)

    async def save_cursor(self, name: str, value: str) -> None:
        self.cursors[name] = value

    async def public_status(self, typed_code: str) -> Mapping[str, object] | None:
        code = parse_tracking_code(typed_code)
        for cid, raw in self.messages.items():
            if tracking_code(cid) == code:
                return {"tracking_code": code, "status": "received",
                        "status_label": "Diterima, belum terverifikasi",
                        "received_at": raw.received_at.isoformat(), "channel": raw.channel,
                        "title": None if raw.confidential else raw.title, "agency": raw.agency,
                        "confidential": raw.confidential}
        return None

    async def dead_letter(self, *, channel: str, account: str, reason: str, payload: bytes,
                          content_type: str) -> str:
        self.dead_letters.append((channel, account, reason, payload))
        return hashlib.sha256(payload).hexdigest()[:32]

    async def record_delivery(self, *, channel: str, provider_id: str, state: str,
                              at: float | None = None, error: str | None = None) -> None:
        rank = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
        current = self.deliveries.get((channel, provider_id))
        if current is None or rank.get(state, 0) > rank.get(current, 0):
            self.deliveries[(channel, provider_id)] = state

    async def list_cursors(self, prefix: str) -> dict[str, str]:
        return {k: v for k, v in self.cursors.items() if k.startswith(prefix)}

    async def delete_cursor(self, name: str) -> None:
        self.cursors.pop(name, None)
