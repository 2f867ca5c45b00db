"""Public status of a complaint by tracking code: the central store first, else the outbox.

What it shows is safe for anyone holding the code: never the reporter's identity, and for a
confidential (rahasia) complaint not even its title.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from forwarder.outbox import Outbox
from forwarder.store import CentralStore
from normalizer.ids import parse_tracking_code
from normalizer.pii import mask_pii

#: Public labels (Bahasa Indonesia) of the statuses the central store may hold.
STATUS_LABELS = {
    "queued": "Diterima gateway, sedang diteruskan",
    "received": "Diterima, belum terverifikasi",
    "verified": "Terverifikasi",
    "forwarded": "Didisposisikan ke instansi",
    "in_follow_up": "Ditindaklanjuti",
    "answered": "Dijawab",
    "closed": "Selesai",
    "rejected": "Ditolak / bukan wewenang",
    "withdrawn": "Ditarik oleh pelapor",
}


@dataclass(frozen=True)
class StatusView:
    """What the status page and ``GET /api/v1/complaints/{code}`` show."""

    tracking_code: str
    status: str
    status_label: str
    received_at: str
    channel: str
    title: str | None
    agency: str | None
    confidential: bool

    def public_json(self) -> dict[str, object]:
        return {
            "tracking_code": self.tracking_code,
            "status": self.status,
            "status_label": self.status_label,
            "received_at": self.received_at,
            "channel": self.channel,
            "title": self.title,
            "agency": self.agency,
            "confidential": self.confidential,
        }


class StatusService:
    """Looks complaints up by the code a citizen typed."""

    def __init__(self, store: CentralStore, outbox: Outbox) -> None:
        self._store = store
        self._outbox = outbox

    async def find(self, typed: str) -> StatusView | None:
        """The public view of the complaint, or None (unknown or malformed code)."""
        code = parse_tracking_code(typed)
        if code is None:
            return None
        stored = await self._store.find(code)
        if stored is not None:
            return _view(code, stored.status, stored.payload)
        entry = await self._outbox.find(code)
        if entry is not None:
            return _view(code, "queued" if entry.state == "pending" else "received",
                         entry.payload)
        return None


def _view(code: str, status: str, payload: str | bytes) -> StatusView:
    data = orjson.loads(payload)
    confidential = bool(data.get("confidential"))
    return StatusView(
        tracking_code=code,
        status=status,
        status_label=STATUS_LABELS.get(status, status),
        received_at=str(data.get("received_at", "")),
        channel=str(data.get("channel", "")),
        # The title is public: phone numbers, NIK, emails, accounts in it are masked.
        title=None if confidential or not data.get("title") else mask_pii(data["title"]).text,
        agency=data.get("agency"),
        confidential=confidential,
    )
