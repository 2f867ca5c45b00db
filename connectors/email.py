"""Email: complaints read from IMAP mailboxes (one per agency), acknowledged by SMTP.

Each mailbox has its own worker thread (:mod:`connectors.email_imap`, imapclient is
synchronous); the thread parses what it fetched (:mod:`connectors.email_mime`) and hands the
batch to the event loop (``asyncio.run_coroutine_threadsafe``), where the messages are
submitted concurrently (the outbox commits them as a group). Only the UIDs whose complaint is
durable, or whose message was recorded as a dead letter, are flagged ``\\Seen`` + keyword.

* Native id: the normalised Message-ID (a second delivery of one Message-ID is the same
  complaint, also after a UIDVALIDITY change), else ``sha256:<hash of the bytes>``.
* Account: the mailbox's ``from_address``.
* Not complaints (recorded as dead letters with the reason, then flagged): auto-replies
  (``Auto-Submitted``, ``X-Autoreply``...), bounces and other reports (``multipart/report``,
  MAILER-DAEMON), mailing-list and bulk mail (``List-Id``, ``Precedence``), our own messages,
  unparseable or oversized messages, and messages with nothing to read.
* Follow-ups: an ``In-Reply-To``/``References`` naming one of our replies
  (``<KODE.complaint-id@our-domain>``) sets ``thread_of``; a tracking code in the subject is
  found by the intake (the subject is the title).
* Commands (:mod:`connectors.email_commands`): ``STATUS KODE`` is answered by email with the
  public status (never a confidential complaint's content nor the reporter), ``BATAL KODE``
  withdraws a complaint of the same sender address (within the intake's window); neither is
  stored as a complaint or a follow-up. The answer is best effort (the citizen can ask again).
* Replies: :meth:`EmailConnector.send_reply` answers from the mailbox the complaint came to
  (a reply owed for a complaint from another channel: from the first mailbox that sends),
  threaded on the citizen's Message-ID; status notices answer our acknowledgement
  (:mod:`connectors.email_smtp`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, ClassVar, TypeVar

from config.email import EmailSettings, MailboxSettings
from connectors.base import (
    Attachment,
    BaseConnector,
    ConnectorState,
    Intake,
    IntakeResult,
    RawMessage,
    ReplyTarget,
    Sender,
)
from connectors.commands import status_text
from connectors.email_commands import mail_command
from connectors.email_imap import Cursor, Fetched, MailboxWorker
from connectors.email_mime import ParsedMail, parse_mail
from connectors.email_smtp import (
    answer_message_id,
    build_message,
    build_reply,
    complaint_of,
    reply_subject,
    send,
)
from errors import (
    AttachmentRejected,
    ChannelRejected,
    LaporError,
    StoreUnavailable,
    ValidationFailed,
)
from normalizer.ids import parse_tracking_code
from normalizer.raw import sender_key

log = logging.getLogger(__name__)

CHANNEL = "email"
STOP_GRACE_S = 3.0  # then a worker blocked in a read has its socket shut down
STOP_TIMEOUT_S = 10.0
#: Where a kept message names the mailbox it was delivered to (for a replay).
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "To", "Cc")
T = TypeVar("T")


class _CommandMail(ValidationFailed):
    """A ``STATUS``/``BATAL`` command by email: answered, never stored as a complaint."""

    def __init__(self, raw: RawMessage, action: str, typed: str) -> None:
        super().__init__(f"a {action.upper()} command, not a complaint")
        self.raw, self.action, self.typed = raw, action, typed


class _NotComplaint(ValidationFailed):
    """A message that is not a complaint (auto-reply, bounce, our own, unreadable); the
    message is the reason its dead letter keeps."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A fetched message and what the worker thread made of it."""

    uid: int
    raw: bytes
    parsed: ParsedMail | None
    problem: str | None  # why it cannot be parsed or read


class _Bridge:
    """The :class:`connectors.email_imap.MailboxBridge` of one mailbox: blocking calls from
    the worker thread, each run on the event loop."""

    def __init__(self, connector: EmailConnector, box: MailboxSettings,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._connector = connector
        self._box = box
        self._loop = loop
        self._cursor_name = f"email:{box.from_address}:{box.folder}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError as exc:  # the loop is closed: the gateway is gone
            coro.close()
            raise StoreUnavailable("the gateway's event loop is closed") from exc
        return future.result()

    def load_cursor(self) -> Cursor | None:
        value = self._call(self._connector.intake.load_cursor(self._cursor_name))
        return Cursor.loads(value) if value else None

    def save_cursor(self, cursor: Cursor) -> None:
        self._call(self._connector.intake.save_cursor(self._cursor_name, cursor.dumps()))

    def process(self, uidvalidity: int, items: Sequence[Fetched]) -> set[int]:
        prepared = [self._connector.prepare(item) for item in items]  # parsed in this thread
        return self._call(self._connector.handle_batch(self._box, prepared))

    def paused(self) -> bool:
        return self._connector.paused

    def report(self, error: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._connector.note, self._box, error)


class EmailConnector(BaseConnector):
    """Complaints from IMAP mailboxes; acknowledgements by SMTP."""

    name: ClassVar[str] = "email"
    replies: bool = True

    def __init__(self, settings: EmailSettings) -> None:
        super().__init__()
        self._settings = settings
        self._boxes = {box.from_address: box for box in settings.all_mailboxes()}
        self._domains = {box.domain for box in self._boxes.values()}
        #: No mailbox has an SMTP server: the reply loop owes email citizens nothing.
        self.replies = any(box.smtp_host for box in self._boxes.values())
        self._workers: list[MailboxWorker] = []
        self._errors: dict[str, str | None] = {}

    @property
    def paused(self) -> bool:
        """Whether an operator paused the connector (read by the worker threads)."""
        return self._health.state is ConnectorState.PAUSED

    @property
    def accounts(self) -> list[str]:
        """Our mailbox addresses (the messages' ``account``)."""
        return list(self._boxes)

    # ----------------------------------------------------------------- lifecycle

    async def start(self, intake: Intake) -> None:
        """Start one worker thread per mailbox; they connect in the background (the
        connector is ``degraded`` until every mailbox is selected)."""
        await super().start(intake)
        self._health.state = ConnectorState.DEGRADED
        loop = asyncio.get_running_loop()
        for box in self._boxes.values():
            self._errors[box.from_address] = "connecting"
            worker = MailboxWorker(box, self._settings, _Bridge(self, box, loop))
            self._workers.append(worker)
            worker.start()

    async def stop(self) -> None:
        """Signal every worker; a worker in IDLE leaves within a second, one blocked in a read
        has its socket shut down after ``STOP_GRACE_S``. Un-flagged messages are read again
        at the next start."""
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            await asyncio.to_thread(worker.thread.join, STOP_GRACE_S)
            if worker.thread.is_alive():
                worker.abort()
                await asyncio.to_thread(worker.thread.join, STOP_TIMEOUT_S)
            if worker.thread.is_alive():
                log.warning("email %s: worker did not stop", worker.box.from_address)
        self._workers = []
        await super().stop()

    def note(self, box: MailboxSettings, error: str | None) -> None:
        """A worker's report (called on the loop): its mailbox works, or what failed."""
        self._errors[box.from_address] = error
        if error is not None:
            self.record_error(f"{box.from_address}: {error}")
        if self._health.state in (ConnectorState.PAUSED, ConnectorState.STOPPED,
                                  ConnectorState.FAILED):
            return
        working = all(value is None for value in self._errors.values())
        self._health.state = ConnectorState.RUNNING if working else ConnectorState.DEGRADED
        if error is None:
            self._health.last_success = time.time()

    def resume(self) -> None:
        """Undo a pause (the workers' next IDLE check reads what waited)."""
        if self._health.state is ConnectorState.PAUSED:
            working = all(value is None for value in self._errors.values())
            self._health.state = ConnectorState.RUNNING if working else ConnectorState.DEGRADED

    # ----------------------------------------------------------------- messages

    def prepare(self, item: Fetched) -> _Prepared:
        """Parse one fetched message (in the worker thread)."""
        if item.too_large:
            return _Prepared(item.uid, item.raw, None,
                             f"message of {item.size} bytes is over max_message_bytes "
                             f"({self._settings.max_message_bytes}); headers kept")
        try:
            parsed = parse_mail(item.raw, max_attachment_bytes=self._settings.max_attachment_bytes,
                                max_attachments=self._settings.max_attachments)
        except ValidationFailed as exc:  # a MIME bomb, refused before or while parsing
            return _Prepared(item.uid, item.raw, None, str(exc))
        except Exception as exc:  # the email package is lenient; anything left is a bad message
            return _Prepared(item.uid, item.raw, None, f"unparseable: {type(exc).__name__}")
        return _Prepared(item.uid, item.raw, parsed, None)

    async def handle_batch(self, box: MailboxSettings, batch: Sequence[_Prepared]) -> set[int]:
        """Handle a batch concurrently; the UIDs that are durable or recorded."""
        outcomes = await asyncio.gather(*(self._handle_safely(box, item) for item in batch))
        return {item.uid for item, done in zip(batch, outcomes, strict=True) if done}

    async def _handle_safely(self, box: MailboxSettings, item: _Prepared) -> bool:
        """Whether the message is durable or recorded. A retriable store error leaves it for
        later; anything else (a bug meeting an odd message) records it as a dead letter, so
        one poison message cannot hold the mailbox back."""
        try:
            return await self._handle(box, item)
        except LaporError as exc:
            if exc.retriable:
                return False
            failure: Exception = exc
        except Exception as exc:
            failure = exc
        log.error("email %s: uid %d could not be handled: %s", box.from_address, item.uid,
                  type(failure).__name__, exc_info=failure)
        self.record_error(f"{box.from_address}: {type(failure).__name__}: {failure}")
        try:
            await self._record(box, f"connector error: {type(failure).__name__}", item.raw)
        except LaporError:
            return False
        return True

    async def _handle(self, box: MailboxSettings, item: _Prepared) -> bool:
        try:
            raw = await self._message(box, item)
            await self.submit(raw)
        except _CommandMail as mail:
            assert item.parsed is not None
            await self._command(box, item.parsed, mail.raw, mail.action, mail.typed)
        except _NotComplaint as exc:
            await self._record(box, str(exc), item.raw)
        except ValidationFailed as exc:
            await self._record(box, f"not a complaint: {exc}", item.raw)
        return True

    async def replay(self, payload: bytes, content_type: str) -> IntakeResult | None:
        """A kept message (raw RFC 822 bytes) parsed and submitted again, for the mailbox
        it was delivered to (``Delivered-To``/``X-Original-To``/``To``/``Cc``; the only
        mailbox when there is one). Exact dedup on the Message-ID makes a second replay a
        duplicate; what is still not a complaint raises ``ValidationFailed``."""
        box = self._box_of(payload)
        item = self.prepare(Fetched(uid=0, raw=payload, size=len(payload), too_large=False))
        return await self.submit(await self._message(box, item))

    def _box_of(self, payload: bytes) -> MailboxSettings:
        if len(self._boxes) == 1:
            return next(iter(self._boxes.values()))
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(payload)
        named = getaddresses([str(value) for name in RECIPIENT_HEADERS
                              for value in headers.get_all(name, [])])
        for _, address in named:
            box = self._boxes.get(address.lower())
            if box is not None:
                return box
        raise ValidationFailed("the message names none of our mailboxes as its recipient")

    async def _message(self, box: MailboxSettings, item: _Prepared) -> RawMessage:
        """The complaint ``item`` is. Raises ``_NotComplaint`` (with the reason a dead
        letter keeps) for what is not one."""
        parsed = item.parsed
        if parsed is None:  # kept as fetched (only the header of an oversized message)
            raise _NotComplaint(item.problem or "unreadable")
        if parsed.automatic is not None:
            self.count("ignored")
            raise _NotComplaint(f"not a complaint: {parsed.automatic}")
        if parsed.from_address in self._boxes:
            self.count("ignored")
            raise _NotComplaint("not a complaint: sent by one of our mailboxes")
        command = mail_command(parsed.subject, parsed.text)
        if command is not None:
            raise _CommandMail(self._raw(box, parsed, item, parsed.text), *command)
        attachments, refused = await self._attachments(parsed)
        text = parsed.text
        names = [part.name for part in parsed.attachments] + list(parsed.skipped)
        if not text.strip():
            text = parsed.subject or (f"Lampiran: {', '.join(names)}" if names else "")
        if refused or parsed.skipped:
            text += "\n\n[Lampiran tidak disimpan: " + ", ".join(
                [*refused, *parsed.skipped]) + "]"
        return self._raw(box, parsed, item, text, attachments)

    def _raw(self, box: MailboxSettings, parsed: ParsedMail, item: _Prepared, text: str,
             attachments: Sequence[Attachment] = ()) -> RawMessage:
        return RawMessage(
            channel=CHANNEL,
            account=box.from_address,
            native_id=_native_id(parsed, item.raw),
            received_at=datetime.now(UTC),
            sent_at=parsed.date,
            sender=Sender(name=parsed.from_name, email=parsed.from_address),
            text=text.strip(),
            title=parsed.subject[:200] or None,
            attachments=tuple(attachments),
            thread_of=self._thread_of(parsed),
            connector=self.name,
            raw_payload=item.raw,
            raw_content_type="message/rfc822",
            reply_hints=_hints(parsed),
        )

    async def _command(self, box: MailboxSettings, parsed: ParsedMail, raw: RawMessage,
                       action: str, typed: str) -> None:
        """Answer ``STATUS``/``BATAL`` by email to the sender's own address (``From``: a
        withdrawal is theirs to make, and a forged ``From`` only informs its real owner)."""
        code = parse_tracking_code(typed) if typed else None
        if action == "status":
            self.count("status_queries")
            status = await self.intake.public_status(code) if code else None
            text = status_text(code or typed.strip(), status)
        else:
            self.count("withdrawals")
            text = await self.intake.withdraw(channel=CHANNEL, account=box.from_address,
                                              sender_key=sender_key(raw), typed_code=typed or None)
        if not parsed.from_address or not box.smtp_host:
            return
        message = build_message(
            box, to=parsed.from_address, text=text,
            subject=reply_subject(parsed.subject, code or "", "Status laporan"),
            message_id=answer_message_id(raw.native_id, box.domain),
            in_reply_to=parsed.message_id, references=" ".join(parsed.references[-9:]))
        try:
            await send(box, message, self._settings.timeout_s)
        except LaporError as exc:
            self.record_error(f"{box.from_address}: command answer failed: {type(exc).__name__}")
            log.warning("email %s: answer to a %s command failed: %s", box.from_address,
                        action, exc)
            return
        self.count("replies_sent")

    async def _record(self, box: MailboxSettings, reason: str, payload: bytes) -> None:
        await self.intake.dead_letter(channel=CHANNEL, account=box.from_address, reason=reason,
                                      payload=payload, content_type="message/rfc822")

    async def _attachments(self, parsed: ParsedMail) -> tuple[list[Attachment], list[str]]:
        stored: list[Attachment] = []
        refused: list[str] = []
        for part in parsed.attachments:
            try:
                stored.append(await self.intake.store_attachment(
                    name=part.name, declared_type=part.declared_type, data=part.data))
            except AttachmentRejected:
                self.count("attachments_refused")
                refused.append(part.name)
        return stored, refused

    def _thread_of(self, parsed: ParsedMail) -> str | None:
        for message_id in (*parsed.in_reply_to, *reversed(parsed.references)):
            complaint = complaint_of(message_id, self._domains)
            if complaint is not None:
                return complaint
        return None

    # ----------------------------------------------------------------- replies

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        """Email the acknowledgement from the mailbox the complaint came to, threaded on the
        citizen's message (a status notice: on our acknowledgement); returns our Message-ID. A
        reply owed for another channel's complaint (no account) goes from the first mailbox
        with SMTP."""
        box = self._boxes.get(target.account) if target.account else next(
            (b for b in self._boxes.values() if b.smtp_host), None)
        if box is None:
            raise ChannelRejected(f"email: no mailbox {target.account or 'with SMTP'} configured")
        address = target.hints.get("address") or target.address
        if not address:
            raise ChannelRejected("email: the complaint has no address to answer")
        message = build_reply(box, to=address, text=text, tracking_code=target.tracking_code,
                              complaint_id=target.complaint_id,
                              subject=target.hints.get("subject", ""),
                              in_reply_to=target.hints.get("message_id") or None,
                              references=target.hints.get("references", ""),
                              kind=target.kind)
        await send(box, message, self._settings.timeout_s)
        self.count("replies_sent")
        return str(message["Message-ID"])


def _native_id(parsed: ParsedMail, raw: bytes) -> str:
    if parsed.message_id:
        return parsed.message_id[:500]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _hints(parsed: ParsedMail) -> dict[str, str]:
    hints = {"address": parsed.answer_to or "", "subject": parsed.subject[:300],
             "message_id": parsed.message_id or "",
             "references": " ".join(parsed.references[-9:])}
    return {key: value for key, value in hints.items() if value}


__all__ = ["EmailConnector"]
