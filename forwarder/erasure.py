"""Erasure of a reporter's personal data on request (UU PDP, UU 27/2022), keeping an
anonymised record so counts, statuses and reports stay true.

For the complaint with the given tracking code and every follow-up message threaded onto it:

* the reporter becomes anonymous with no name, handle, e-mail, phone or channel user id;
* title and body: the reporter's known identifiers replaced by ``[dihapus]``, then every NIK,
  phone number, e-mail address and bank account masked (:func:`normalizer.pii.mask_pii`);
* location: only the region code is kept (no address text, no coordinates);
* attachments: type and size are kept, name, hash and stored bytes are dropped (the files are
  deleted unless another complaint holds the same bytes);
* the native id becomes ``erased:<complaint id>``; the raw payload as received, the reply
  hints and the sender key are cleared in the outbox;
* reply bodies are replaced, replies still queued are failed (there is nobody to tell), and
  status-history notes and answers are cleared.

Records already on Kafka topics age out with the topics' retention; they are not rewritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from forwarder.db import Database, Executor
from forwarder.outbox import now_us
from normalizer.pii import mask_pii
from normalizer.schema import Attachment, Complaint, Location, Reporter

log = logging.getLogger(__name__)

ERASED = "[dihapus]"


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure touched."""

    complaint_ids: list[str]
    files_deleted: int


def anonymise(complaint: Complaint) -> Complaint:
    """The complaint without its reporter's personal data (see the module docstring)."""
    reporter = complaint.reporter
    known = [v for v in (reporter.name, reporter.handle, reporter.email, reporter.phone,
                         reporter.channel_user_id) if v and len(v) >= 3]

    def scrub(text: str) -> str:
        for value in sorted(known, key=len, reverse=True):
            text = text.replace(value, ERASED)
        return mask_pii(text).text

    location = None
    if complaint.location is not None and complaint.location.region_code:
        location = Location(region_code=complaint.location.region_code)
    return complaint.model_copy(update={
        "reporter": Reporter(anonymous=True),
        "title": scrub(complaint.title)[:200],
        "body": scrub(complaint.body)[:20000] or ERASED,
        "location": location,
        "native_id": f"erased:{complaint.id}",
        "attachments": tuple(Attachment(name=f"lampiran-{i + 1}", content_type=a.content_type,
                                        size=a.size, state=a.state)
                             for i, a in enumerate(complaint.attachments)),
    })


async def erase(db: Database, tracking_code: str,
                attachments_root: Path | None = None) -> Erased | None:
    """Erase the reporter's personal data of one complaint (and its follow-ups); None when no
    complaint has this code. Repeating it changes nothing more."""
    row = await db.fetchrow("SELECT id FROM outbox WHERE tracking_code = $1", tracking_code)
    if row is None:
        row = await db.fetchrow("SELECT id FROM complaints WHERE tracking_code = $1",
                                tracking_code)
    if row is None:
        return None
    root = str(row[0])
    digests: set[str] = set()
    async with db.transaction() as tx:
        followers = await tx.fetch("SELECT id FROM outbox WHERE thread_of = $1", root)
        ids = [root, *(str(r[0]) for r in followers)]
        for cid in ids:
            digests |= await _erase_one(tx, cid)
    deleted = 0
    if attachments_root is not None:
        for digest in digests:
            others = await db.fetchrow(
                "SELECT COUNT(*) FROM outbox WHERE payload LIKE $1", f"%{digest}%")
            path = attachments_root / digest[:2] / digest
            if others is not None and int(others[0]) == 0 and path.exists():
                path.unlink()
                deleted += 1
    log.info("erasure: personal data of complaint=%s (%d record(s)) erased", root, len(ids))
    return Erased(ids, deleted)


async def _erase_one(tx: Executor, cid: str) -> set[str]:
    """Anonymise one complaint everywhere; return the attachment hashes it referenced."""
    digests: set[str] = set()
    now = now_us()
    for table in ("outbox", "complaints"):
        row = await tx.fetchrow(f"SELECT payload FROM {table} WHERE id = $1", cid)
        if row is None:
            continue
        complaint = Complaint.from_json(str(row[0]))
        digests |= {a.sha256 for a in complaint.attachments if a.sha256}
        payload = anonymise(complaint).to_json().decode()
        if table == "outbox":
            await tx.execute(
                "UPDATE outbox SET payload = $1, native_id = $2, raw_payload = $3,"
                " reply_hints = '{}', sender_key = NULL WHERE id = $4",
                payload, f"erased:{cid}", b"", cid)
        else:
            await tx.execute(
                "UPDATE complaints SET payload = $1, native_id = $2, anonymous = $3,"
                " erased_us = $4 WHERE id = $5",
                payload, f"erased:{cid}", True, now, cid)
    await tx.execute(
        "UPDATE replies SET body = $1, state = CASE WHEN state = 'queued' THEN 'failed'"
        " ELSE state END, last_error = CASE WHEN state = 'queued'"
        " THEN 'personal data erased' ELSE last_error END WHERE complaint_id = $2",
        ERASED, cid)
    await tx.execute("UPDATE status_history SET note = NULL, answer = NULL"
                     " WHERE complaint_id = $1", cid)
    return digests
