"""Test doubles of the connector interfaces (``FakeIntake``), shipped for connector tests."""

from __future__ import annotations

import asyncio
import hashlib

from connectors.base import IntakeResult
from errors import AttachmentRejected, StoreUnavailable
from normalizer.ids import complaint_id, tracking_code
from normalizer.media import safe_filename, sniff_content_type
from normalizer.raw import RawMessage
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

    async def submit(self, raw: RawMessage) -> IntakeResult:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise StoreUnavailable("fake intake told to fail")
        cid = complaint_id(raw.channel, raw.account, raw.native_id)
        duplicate = cid in self.messages
        if not duplicate:
            self.messages[cid] = raw
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
