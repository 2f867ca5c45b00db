"""Telegram: the province's bot, by webhook (``POST /webhooks/telegram``) or by long polling.

The Bot API client is python-telegram-bot's :class:`telegram.Bot`, pointed at
``settings.api_base`` (an emulator in tests). PTB errors are translated here, at the boundary:
``RetryAfter``, ``NetworkError``, ``TimedOut``, 5xx and ``Conflict`` become
:class:`errors.ChannelUnavailable` (``retry_after`` from a 429); ``BadRequest``, ``Forbidden``,
``InvalidToken`` and the rest :class:`errors.ChannelRejected` (see
:mod:`connectors.telegram_api`).

Acknowledgement follows the gateway's rule: upstream is told only after ``Intake.submit``
returned.

* Webhook: ``X-Telegram-Bot-Api-Secret-Token`` is compared in constant time (missing or wrong:
  403, nothing stored); the answer is 200 only after the update was handled; 503 when the store
  is unavailable, so Telegram delivers the update again; 400 for a body that is not an Update.
* Media: a download is retried for ``media_retry_for_s``; one that still fails (or is refused)
  no longer holds the update: the complaint is accepted without it, the citizen is told, and
  the file is kept as a dead letter (``MEDIA_REF``) whose replay adds it as a follow-up.
* Polling: our own ``getUpdates`` loop (not PTB's ``Updater``, which confirms updates once they
  are queued in memory). The offset moves past an update only after it was handled, and is
  saved as the durable cursor ``telegram:<bot id>:offset``; the next ``getUpdates`` call
  carries it, which is what confirms the updates to Telegram.

Native ids are ``<chat id>:<message id>`` (``...:edit:<edit date>`` for edits): a redelivered
update, the same message seen by webhook and later by polling, or an ``update_id`` sequence
restarted by Telegram all map to the same complaint, and an edit can name the complaint of the
message it edits.

Conversation rules: private chats only become complaints; in groups the bot answers only when
addressed (``@mention``, a reply to the bot, ``/cmd@bot``). ``/start``, ``/bantuan`` and
``/status KODE`` are answered, not stored; ``/batal [KODE]`` withdraws the sender's complaint
(their newest without a code) within ``[lifecycle] withdraw_window_s``. Album items, locations,
contacts and caption-less media join the sender's open complaint (``conversation_window_s``)
as follow-ups (``RawMessage.thread_of``); an edited message revises the text of the complaint
its original became (``RawMessage.edit_of``; the text history is ``Complaint.revisions``), no
second complaint.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import orjson
from aiohttp import web
from telegram import Bot, Chat, Message, ReplyParameters, Update, User
from telegram.error import RetryAfter, TelegramError

from config.telegram import TelegramSettings
from connectors import telegram_texts as texts
from connectors.base import (
    MEDIA_REF,
    Attachment,
    BaseConnector,
    ConnectorState,
    Intake,
    IntakeResult,
    RawMessage,
    ReplyTarget,
    Sender,
)
from connectors.telegram_api import (
    URL_LOGGERS,
    FloodLimited,
    RateLimiter,
    RedactToken,
    Request,
    call_api,
    translate_error,
)
from errors import (
    AttachmentRejected,
    ChannelError,
    ChannelRejected,
    ChannelUnavailable,
    LaporError,
    StoreUnavailable,
    ValidationFailed,
    retry_policy,
)
from normalizer.schema import Location

log = logging.getLogger(__name__)

CHANNEL = "telegram"
ROUTE = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: The update kinds we ask Telegram for; anything else is ignored if it arrives anyway.
ALLOWED_UPDATES = ("message", "edited_message")
#: Telegram may restart update_id at a random value after a week without updates, so an offset
#: older than this is dropped: Telegram's own confirmation (every call carries our offset,
#: which only passes handled updates) then decides what is redelivered.
OFFSET_STALE_S = 6 * 24 * 3600.0
#: A poll loop error that is not a channel or store error (a bug, a poison update) is retried
#: this many times for the same update before the update is skipped (logged, counted).
MAX_UPDATE_ATTEMPTS = 5
#: Longest a send waits out a 429 pause in place; longer pauses raise ChannelUnavailable with
#: the remaining time, so the durable reply loop retries instead of holding its batch.
PAUSE_WAIT_MAX_S = 2.0
#: Pause after a permanent Bot API refusal in the poll loop (409 settled by an operator, ...).
REJECTED_PAUSE_S = 30.0
#: Most recent complaint ids remembered with their conversation's first complaint.
ROOTS_KEPT = 10_000
WEBHOOK_RETRY_AFTER_S = "5"


# --------------------------------------------------------------------------- the connector


@dataclass(frozen=True, slots=True)
class _Media:
    file_id: str
    name: str
    mime: str | None
    size: int | None
    placeholder: str


class TelegramConnector(BaseConnector):
    """The Telegram bot: webhook or polling, complaints from private chats, commands, replies."""

    name: ClassVar[str] = "telegram"
    replies: bool = True

    def __init__(self, settings: TelegramSettings, *, public_url: str | None) -> None:
        """``public_url``: the gateway's public base URL; in webhook mode the connector
        registers ``<public_url>/webhooks/telegram`` with Telegram at start (None: the
        webhook is managed outside the gateway)."""
        super().__init__()
        self._settings = settings
        self._public_url = public_url.rstrip("/") if public_url else None
        token = settings.token.get_secret_value()
        self._redactor = RedactToken(token)
        for name in URL_LOGGERS:
            logging.getLogger(name).addFilter(self._redactor)
        timeout = settings.request_timeout_s
        api = settings.api_base
        self._bot = Bot(
            token,
            base_url=f"{api}/bot",
            base_file_url=f"{api}/file/bot",
            request=Request(connection_pool_size=8, connect_timeout=timeout,
                                 read_timeout=timeout, write_timeout=timeout,
                                 pool_timeout=timeout, media_write_timeout=timeout),
            get_updates_request=Request(connection_pool_size=1, connect_timeout=timeout,
                                         read_timeout=timeout, write_timeout=timeout,
                                         pool_timeout=timeout),
        )
        secret = settings.secret_token
        self._secret = secret.get_secret_value().encode() if secret is not None else None
        self._limiter = RateLimiter(settings.send_interval_s, settings.chat_send_interval_s)
        self._me: User | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._offset: int | None = None
        self._offset_at = 0.0
        self._attempts: dict[int, int] = {}
        self._current: tuple[int, bytes] | None = None
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        self._roots: OrderedDict[str, str] = OrderedDict()
        self._albums: OrderedDict[str, str] = OrderedDict()

    # ----------------------------------------------------------------- lifecycle

    @property
    def account(self) -> str | None:
        """The bot's username (the messages' account), once ``getMe`` answered."""
        if self._me is None:
            return None
        return self._me.username or str(self._me.id)

    @property
    def cursor_name(self) -> str | None:
        """The durable cursor of the polling offset, once the bot's id is known."""
        return f"telegram:{self._me.id}:offset" if self._me is not None else None

    def routes(self) -> list[web.AbstractRouteDef]:
        """``POST /webhooks/telegram`` in webhook mode; nothing in polling mode."""
        if self._settings.mode != "webhook":
            return []
        return [web.post(ROUTE, self.receive)]

    async def start(self, intake: Intake) -> None:
        """Start the background task: ``getMe``, then ``setWebhook`` (webhook mode with a
        public URL) or ``deleteWebhook`` and the ``getUpdates`` loop (polling mode).

        Returns at once: while Telegram cannot be reached the connector is ``degraded`` and
        the webhook answers 503 (Telegram retries). A rejected token makes it ``failed``.
        """
        await super().start(intake)
        self._health.state = ConnectorState.DEGRADED
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="telegram-connector")

    async def stop(self) -> None:
        """Signal the loop; an update being handled finishes (``drain_timeout_s``), a pending
        ``getUpdates`` is abandoned (nothing is confirmed by abandoning it)."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._settings.drain_timeout_s)
            except TimeoutError:
                log.warning("telegram: update handling did not finish in %.0fs; cancelled",
                            self._settings.drain_timeout_s)
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        with contextlib.suppress(TelegramError):
            await self._bot.shutdown()
        self._me = None  # a restart (ops) initialises the bot again
        for name in URL_LOGGERS:
            logging.getLogger(name).removeFilter(self._redactor)
        await super().stop()

    async def _run(self) -> None:
        try:
            await self._bootstrap()
            if self._stopping.is_set():
                return
            self._healthy()
            if self._settings.mode == "polling":
                await self._poll_loop()
        except ChannelRejected as exc:
            self._fail(str(exc))
        except Exception as exc:  # never die silently: ops sees the state and the error
            log.exception("telegram: connector task crashed")
            self._fail(f"{type(exc).__name__}: {exc}")

    async def _bootstrap(self) -> None:
        async for attempt in retry_policy(maximum=30.0, sleep=self._pause,
                                          before_sleep=self._note_retry):
            with attempt:
                if self._stopping.is_set():
                    return
                if self._me is None:
                    await call_api(self._bot.initialize())
                    self._me = self._bot.bot
                if self._settings.mode == "polling":
                    await call_api(self._bot.delete_webhook(drop_pending_updates=False))
                elif self._public_url is not None:
                    await call_api(self._bot.set_webhook(
                        self._public_url + ROUTE,
                        secret_token=self._secret.decode() if self._secret else None,
                        allowed_updates=list(ALLOWED_UPDATES),
                    ))
        log.info("telegram: bot %s ready (%s mode)", self.account, self._settings.mode)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless ``stop()`` is called first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _note_retry(self, state: object) -> None:
        outcome = getattr(state, "outcome", None)
        exc = outcome.exception() if outcome is not None else None
        if exc is not None:
            self._degrade(f"{type(exc).__name__}: {exc}")

    def _healthy(self) -> None:
        if self._health.state in (ConnectorState.DEGRADED, ConnectorState.RUNNING):
            self._health.state = ConnectorState.RUNNING
        self._health.last_success = time.time()

    def _degrade(self, error: str) -> None:
        self.record_error(error)
        if self._health.state == ConnectorState.RUNNING:
            self._health.state = ConnectorState.DEGRADED
        log.warning("telegram: %s", error)

    def _fail(self, error: str) -> None:
        self.record_error(error)
        self._health.state = ConnectorState.FAILED
        log.error("telegram: giving up: %s", error)

    # ----------------------------------------------------------------- webhook

    async def receive(self, request: web.Request) -> web.Response:
        """``POST /webhooks/telegram``: one Update from Telegram."""
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if self._secret is None or not hmac.compare_digest(given, self._secret):
            return web.json_response({"error": "forbidden",
                                      "detail": "missing or wrong secret token"}, status=403)
        if not self.accepting or self._me is None:
            return _unavailable("the Telegram connector is not ready")
        body = await request.read()
        update, problem = _parse_update(body, self._bot)
        if update is None:
            # Authenticated but unusable: keep the bytes for an operator, then say why.
            try:
                await self._dead_letter(problem, body)
            except StoreUnavailable:
                return _unavailable("not stored; retry")
            # Kept as a dead letter: a redelivery of the same bytes cannot do better, so
            # Telegram must not retry it (its pending_update_count would only grow).
            return web.json_response({"ok": False, "dead_letter": True, "detail": problem})
        try:
            await self.handle_update(update, body)
        except (StoreUnavailable, ChannelUnavailable) as exc:
            log.warning("telegram: update %d not stored, Telegram will retry: %s",
                        update.update_id, exc)
            return _unavailable("not stored; retry")
        return web.Response(status=200)

    async def replay(self, payload: bytes, content_type: str) -> IntakeResult | None:
        """A kept Update (webhook body or poison update) handled again, or a medium that
        never downloaded fetched again."""
        if content_type == MEDIA_REF:
            return await self._replay_media(payload)
        update, problem = _parse_update(payload, self._bot)
        if update is None:
            raise ValidationFailed(problem)
        return await self.captured(self.handle_update(update, payload))

    # ----------------------------------------------------------------- polling

    async def _poll_loop(self) -> None:
        await self._load_offset()
        while not self._stopping.is_set():
            try:
                async for attempt in retry_policy(maximum=30.0, sleep=self._pause,
                                                  before_sleep=self._note_retry):
                    with attempt:
                        await self._poll_once()
            except ChannelRejected as exc:
                self._degrade(str(exc))
                await self._pause(REJECTED_PAUSE_S)
            except Exception as exc:  # a bug or a poison update must not end the loop
                log.exception("telegram: poll loop error")
                self._degrade(f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(LaporError):
                    await self._count_poison(f"{type(exc).__name__}: {exc}")
                await self._pause(1.0)

    async def _load_offset(self) -> None:
        name = self.cursor_name
        assert name is not None
        value: str | None = None
        async for attempt in retry_policy(maximum=30.0, sleep=self._pause):
            with attempt:
                if self._stopping.is_set():  # _pause no longer waits: do not spin
                    return
                value = await self.intake.load_cursor(name)
        if not value:
            return
        try:
            saved = orjson.loads(value)
            offset, saved_at = int(saved["offset"]), float(saved["saved_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("telegram: ignoring unreadable cursor %s", name)
            return
        if time.time() - saved_at > OFFSET_STALE_S:
            log.info("telegram: cursor %s is older than %.0f days; Telegram's own confirmation "
                     "decides", name, OFFSET_STALE_S / 86400)
            return
        self._offset, self._offset_at = offset, saved_at

    async def _save_offset(self) -> None:
        name = self.cursor_name
        assert name is not None and self._offset is not None
        value = orjson.dumps({"offset": self._offset, "saved_at": self._offset_at}).decode()
        await self.intake.save_cursor(name, value)

    async def _poll_once(self) -> None:
        """One ``getUpdates`` call and the handling of what it returned, in order.

        Raises retriable errors (Telegram or the store unavailable) with the offset left at
        the first update not handled, so the next call fetches it again.
        """
        if self._stopping.is_set():
            return
        if not self.accepting:  # paused by an operator: updates wait at Telegram (24 h)
            await self._pause(1.0)
            return
        if self._offset is not None and time.time() - self._offset_at > OFFSET_STALE_S:
            self._offset = None
        self._current = None  # a failure from here on is not the last update's fault
        updates = await self._fetch()
        if updates is None:
            return
        self._healthy()
        start = self._offset
        try:
            for update in updates:
                if self._stopping.is_set():
                    break  # the rest stays unconfirmed and comes again after the restart
                raw = orjson.dumps(update.to_dict())
                self._current = (update.update_id, raw)
                await self.handle_update(update, raw)
                self._attempts.pop(update.update_id, None)
                self._current = None
                self._offset, self._offset_at = update.update_id + 1, time.time()
        finally:
            if self._offset != start:
                await self._save_offset()

    async def _fetch(self) -> tuple[Update, ...] | None:
        """``getUpdates`` with our offset, or None when ``stop()`` came first."""
        fetch = asyncio.ensure_future(call_api(self._bot.get_updates(
            offset=self._offset, limit=self._settings.poll_limit,
            timeout=self._settings.poll_timeout_s, allowed_updates=list(ALLOWED_UPDATES))))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, LaporError):
                await fetch
            return None
        return fetch.result()

    async def _count_poison(self, error: str) -> None:
        """Count an unexpected failure of the update being handled; after too many, keep it
        as a dead letter and move past it (Telegram drops unconfirmed updates after 24 h
        anyway, and one bad update must not hold back every citizen behind it)."""
        if self._current is None:
            return
        update_id, raw = self._current
        attempts = self._attempts.get(update_id, 0) + 1
        self._attempts[update_id] = attempts
        if attempts < MAX_UPDATE_ATTEMPTS:
            return
        await self._dead_letter(f"failed {attempts} times: {error}", raw)
        log.error("telegram: update %d kept as a dead letter after %d failed attempts",
                  update_id, attempts)
        self.count("skipped")
        self._attempts.pop(update_id, None)
        self._current = None
        self._offset, self._offset_at = update_id + 1, time.time()
        await self._save_offset()

    async def _dead_letter(self, reason: str, raw: bytes) -> None:
        self.count("dead_letters")
        await self.intake.dead_letter(channel=CHANNEL, account=self.account or "unknown",
                                      reason=reason, payload=raw,
                                      content_type="application/json")

    # ----------------------------------------------------------------- updates

    async def handle_update(self, update: Update, raw: bytes) -> None:
        """Handle one Update (either mode). Returns once it is durable or deliberately ignored.

        Raises ``StoreUnavailable`` or ``ChannelUnavailable`` (leave it unconfirmed: Telegram
        delivers it again). Messages of one chat are handled one at a time, so album items
        and a location following a text join the same complaint.
        """
        message = update.message or update.edited_message
        if message is None:
            self.count("ignored")
            return
        async with self._chat(message.chat.id):
            if update.edited_message is not None:
                await self._on_edit(update.edited_message, raw)
            else:
                await self._on_message(message, raw)

    @contextlib.asynccontextmanager
    async def _chat(self, chat_id: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(chat_id, (asyncio.Lock(), 0))
        self._locks[chat_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[chat_id]
            if users <= 1:
                del self._locks[chat_id]
            else:
                self._locks[chat_id] = (lock, users - 1)

    async def _on_message(self, message: Message, raw: bytes) -> None:
        user = message.from_user
        if user is None or user.is_bot:
            self.count("ignored")
            return
        words = message.text or message.caption or ""
        command = texts.parse_command(message.text or "", self.account)
        if message.chat.type != Chat.PRIVATE:
            if not self._addressed(message, words):
                self.count("ignored")
                return
            if command is None:
                await self._answer(message, texts.GROUP_ONLY_PRIVATE.format(
                    username=self.account))
                return
        if command is not None:
            await self._on_command(message, *command)
            return
        await self._on_complaint(message, user, raw)

    def _addressed(self, message: Message, words: str) -> bool:
        """Whether a group message is meant for the bot: @mention, reply to it, /cmd@bot."""
        assert self._me is not None
        reply_to = message.reply_to_message
        if reply_to is not None and reply_to.from_user is not None \
                and reply_to.from_user.id == self._me.id:
            return True
        username = self._me.username
        return bool(username) and f"@{username}".lower() in words.lower()

    async def _on_command(self, message: Message, name: str, argument: str) -> None:
        self.count("commands")
        meaning = texts.COMMANDS.get(name)
        if meaning == "help":
            answer = texts.HELP
        elif meaning == "status":
            if not argument:
                answer = texts.STATUS_USAGE
            else:
                code = argument[:40]  # "ABCDE 12345" too: the intake forgives spaces
                answer = texts.status_text(code, await self.intake.public_status(code))
        elif meaning == "withdraw":  # /batal [KODE]: only the reporter, within the window
            sender = message.from_user
            answer = await self.intake.withdraw(
                channel=CHANNEL, account=self.account or "",
                sender_key=str(sender.id) if sender is not None else None,
                typed_code=argument[:40] or None)
        else:
            answer = texts.UNKNOWN_COMMAND
        await self._answer(message, answer)

    async def _on_complaint(self, message: Message, user: User, raw: bytes) -> None:
        account = self.account
        assert account is not None
        chat_id = message.chat.id
        own_words = (message.text or message.caption or "").strip()
        attachments, notes, not_stored, given_up = await self._attachments(message)
        lines = [own_words] if own_words else []
        location = None
        if message.location is not None:
            location = Location(lat=message.location.latitude, lon=message.location.longitude)
            if message.venue is not None:
                venue = ", ".join(p for p in (message.venue.title, message.venue.address) if p)
                location = location.model_copy(update={"text": venue[:500] or None})
            if not lines:
                lines.append(texts.LOCATION.format(lat=location.lat, lon=location.lon))
        phone = None
        if message.contact is not None:
            contact = message.contact
            if contact.user_id == user.id:
                phone = contact.phone_number  # the citizen shares their own number
                if not lines:
                    lines.append(texts.CONTACT)
            else:
                name = " ".join(p for p in (contact.first_name, contact.last_name) if p)
                lines.append(texts.SHARED_CONTACT.format(name=name, phone=contact.phone_number))
        if not lines:
            lines.extend(media.placeholder for media in self._media(message))
        lines.extend(texts.NOT_STORED.format(name=name) for name in not_stored)
        thread_of = None
        group = message.media_group_id
        if group is not None and group in self._albums:
            thread_of = self._albums[group]
        elif not own_words:
            recent = await self.intake.recent_complaint(
                channel=CHANNEL, account=account, sender_key=str(user.id),
                within_s=self._settings.conversation_window_s)
            thread_of = self._root(recent.complaint_id) if recent is not None else None
        native_id = f"{chat_id}:{message.message_id}"
        hints = {"chat_id": str(chat_id), "message_id": str(message.message_id)}
        if thread_of is not None:
            hints["follow_up"] = "1"
        raw_message = RawMessage(
            channel=CHANNEL,
            account=account,
            native_id=native_id,
            received_at=datetime.now(UTC),
            sent_at=_aware(message.date),
            sender=Sender(name=user.full_name or None,
                          handle=f"@{user.username}" if user.username else None,
                          phone=phone, channel_user_id=str(user.id)),
            text="\n".join(line for line in lines if line),
            attachments=tuple(attachments),
            location=location,
            thread_of=thread_of,
            connector=self.name,
            raw_payload=raw,
            raw_content_type="application/json",
            reply_hints=hints,
        )
        try:
            result = await self.submit(raw_message)
        except ValidationFailed as exc:
            reason = "; ".join(exc.fields.values()) or texts.NOT_ACCEPTED_DEFAULT
            await self._answer(message, texts.NOT_ACCEPTED.format(reason=reason))
            return
        for index, media, reason in given_up:
            await self._media_given_up(raw_message, index, media, reason, result)
        self._remember(result.complaint_id, thread_of or result.complaint_id)
        if group is not None and group not in self._albums:
            _put(self._albums, group, thread_of or result.complaint_id)
        if not result.duplicate:
            for note in notes:
                await self._answer(message, note)

    async def _on_edit(self, message: Message, raw: bytes) -> None:
        """An edited message: a new version of the text of the complaint its original became
        (the intake keeps the text history; an edit of a message we never saw is new)."""
        user = message.from_user
        words = (message.text or message.caption or "").strip()
        if message.chat.type != Chat.PRIVATE or user is None or user.is_bot or not words \
                or texts.parse_command(words, self.account) is not None:
            # Live-location updates, commands and group messages never became complaints.
            self.count("ignored")
            return
        account = self.account
        assert account is not None
        original = f"{message.chat.id}:{message.message_id}"
        edited = message.edit_date or message.date
        raw_message = RawMessage(
            channel=CHANNEL,
            account=account,
            native_id=f"{original}:edit:{int(edited.timestamp())}",
            received_at=datetime.now(UTC),
            sent_at=_aware(edited),
            sender=Sender(name=user.full_name or None,
                          handle=f"@{user.username}" if user.username else None,
                          channel_user_id=str(user.id)),
            text=words,
            edit_of=original,
            connector=self.name,
            raw_payload=raw,
            raw_content_type="application/json",
            reply_hints={"chat_id": str(message.chat.id), "message_id": str(message.message_id)},
        )
        try:
            await self.submit(raw_message)
        except ValidationFailed:
            self.count("ignored")

    def _root(self, cid: str) -> str:
        """The first complaint of the conversation ``cid`` belongs to (as far as we know)."""
        return self._roots.get(cid, cid)

    def _remember(self, cid: str, root: str) -> None:
        _put(self._roots, cid, root)

    # ----------------------------------------------------------------- media

    def _media(self, message: Message) -> list[_Media]:
        found: list[_Media] = []
        if message.photo:
            largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
            found.append(_Media(largest.file_id, f"foto-{largest.file_unique_id}.jpg",
                                "image/jpeg", largest.file_size, texts.PHOTO))
        if message.document is not None:
            doc = message.document
            name = doc.file_name or f"dokumen-{doc.file_unique_id}"
            found.append(_Media(doc.file_id, name, doc.mime_type, doc.file_size,
                                texts.DOCUMENT.format(name=name)))
        if message.video is not None:
            video = message.video
            found.append(_Media(video.file_id, video.file_name or f"video-{video.file_unique_id}"
                                ".mp4", video.mime_type, video.file_size, texts.VIDEO))
        if message.voice is not None:
            voice = message.voice
            found.append(_Media(voice.file_id, f"suara-{voice.file_unique_id}.ogg",
                                voice.mime_type, voice.file_size, texts.VOICE))
        return found

    async def _attachments(self, message: Message) -> tuple[
            list[Attachment], list[str], list[str], list[tuple[int, _Media, str]]]:
        """Download and store the message's media: (attachments, notes for the citizen,
        names not stored, media given up with why). A download failing for longer than
        ``media_retry_for_s`` (or refused: an expired or unknown file) is given up."""
        attachments: list[Attachment] = []
        notes: list[str] = []
        not_stored: list[str] = []
        given_up: list[tuple[int, _Media, str]] = []
        limit = self._settings.max_download_bytes
        too_big = texts.FILE_TOO_BIG
        for index, media in enumerate(self._media(message)):
            try:
                data = await self._download_retried(media, limit)
            except ChannelError as exc:
                log.warning("telegram: attachment not downloadable: %s", exc)
                notes.append(texts.FILE_UNAVAILABLE.format(name=media.name))
                not_stored.append(media.name)
                given_up.append((index, media, f"{type(exc).__name__}: {exc}"))
                self.count("attachments_unavailable")
                continue
            if data is None:
                notes.append(too_big.format(name=media.name, limit_mb=texts.limit_mb(limit)))
                not_stored.append(media.name)
                self.count("attachments_too_big")
                continue
            try:
                attachments.append(await self.intake.store_attachment(
                    name=media.name, declared_type=media.mime, data=data))
            except AttachmentRejected:
                notes.append(texts.FILE_REFUSED.format(name=media.name))
                not_stored.append(media.name)
                self.count("attachments_refused")
        return attachments, notes, not_stored, given_up

    async def _download_retried(self, media: _Media, limit: int) -> bytes | None:
        """:meth:`_download`, retried with the shared policy for ``media_retry_for_s``."""
        async for attempt in retry_policy(max_delay=self._settings.media_retry_for_s):
            with attempt:
                return await self._download(media, limit)
        raise AssertionError("unreachable: retry_policy re-raises")

    async def _media_given_up(self, raw: RawMessage, index: int, media: _Media, reason: str,
                              parent: IntakeResult) -> None:
        """Keep a medium that was given up as a dead letter (a reference to it and to its
        complaint), so an operator sees it and can replay it (:meth:`_replay_media`)."""
        reference = orjson.dumps({
            "native_id": raw.native_id, "account": raw.account, "index": index,
            "sent_at": raw.sent_at.isoformat() if raw.sent_at else None,
            "sender": raw.sender.model_dump(mode="json"), "hints": raw.reply_hints,
            "file_id": media.file_id, "name": media.name, "mime": media.mime,
            "size": media.size, "parent": {"id": parent.complaint_id,
                                           "code": parent.tracking_code}})
        self.count("dead_letters")
        await self.intake.dead_letter(channel=CHANNEL, account=raw.account,
                                      reason=f"media never downloaded: {reason}"[:1000],
                                      payload=reference, content_type=MEDIA_REF)

    async def _replay_media(self, payload: bytes) -> IntakeResult:
        """A medium given up earlier, downloaded once more; stored, it joins its complaint
        as a follow-up (``<id>#mediaN-replay``: a second replay is a duplicate)."""
        try:
            ref = orjson.loads(payload)
            media = _Media(str(ref["file_id"]), str(ref["name"]), ref["mime"], ref["size"], "")
            parent_id, code = str(ref["parent"]["id"]), str(ref["parent"]["code"])
            sender = Sender(**ref["sender"])
            sent_at = datetime.fromisoformat(ref["sent_at"]) if ref["sent_at"] else None
            native_id, account = str(ref["native_id"]), str(ref["account"])
            suffix = "#media-replay" if not ref["index"] else f"#media{ref['index']}-replay"
            hints = {**ref["hints"], "follow_up": "1"}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValidationFailed(f"unreadable media reference: {type(exc).__name__}") from exc
        try:
            data = await self._download(media, self._settings.max_download_bytes)
        except ChannelError as exc:
            raise ValidationFailed(f"media still not downloadable: {type(exc).__name__}: "
                                   f"{exc}") from exc
        if data is None:
            raise ValidationFailed("media is over the download limit")
        attachment = await self.intake.store_attachment(name=media.name,
                                                        declared_type=media.mime, data=data)
        return await self.submit(RawMessage(
            channel=CHANNEL, account=account, native_id=native_id + suffix,
            received_at=datetime.now(UTC), sent_at=sent_at, sender=sender,
            text=f"Lampiran susulan untuk laporan {code}: {media.name}",
            attachments=(attachment,), thread_of=parent_id, connector=self.name,
            raw_payload=payload, raw_content_type=MEDIA_REF, reply_hints=hints))

    async def _download(self, media: _Media, limit: int) -> bytes | None:
        """The file's bytes, or None when it is over ``limit`` (Telegram's 20 MB or ours)."""
        if media.size is not None and media.size > limit:
            return None
        try:
            file = await call_api(self._bot.get_file(media.file_id))
        except ChannelRejected as exc:
            if "too big" in str(exc).lower():
                return None
            raise
        if file.file_size is not None and file.file_size > limit:
            return None
        data = await call_api(file.download_as_bytearray())
        return bytes(data) if len(data) <= limit else None

    # ----------------------------------------------------------------- sending

    async def _answer(self, message: Message, text: str) -> None:
        """Best effort answer to a command or a note (not durable; the citizen may ask again)."""
        try:
            await self._send(message.chat.id, text, message.message_id)
        except ChannelError as exc:
            self.count("answers_failed")
            log.warning("telegram: could not answer message in update: %s", exc)

    async def _send(self, chat_id: int | str, text: str, reply_to: int | None) -> str:
        paused = self._limiter.paused_for()
        if paused > PAUSE_WAIT_MAX_S:
            # Flood-limited: say when to come back rather than holding the caller (the reply
            # loop's batch, the poll loop, a webhook answer) for the whole pause.
            raise ChannelUnavailable("telegram: flood limit (429) in force", retry_after=paused)
        await self._limiter.acquire(str(chat_id))
        params = ReplyParameters(reply_to, allow_sending_without_reply=True) \
            if reply_to is not None else None
        try:
            sent = await self._bot.send_message(chat_id, text, reply_parameters=params)
        except (FloodLimited, RetryAfter) as exc:
            error = translate_error(exc)
            self._limiter.pause(error.retry_after or 1.0)
            raise error from exc
        except TelegramError as exc:
            raise translate_error(exc) from exc
        self.count("sent")
        return str(sent.message_id)

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        """Send ``text`` to the chat the complaint came from, as a reply to the citizen's
        message. Follow-ups (album items, locations, edits) are not acknowledged separately:
        the citizen has the first complaint's code; None is returned without sending.

        Raises ``ChannelUnavailable`` (``retry_after`` on 429; 5xx, network) or
        ``ChannelRejected`` (the citizen blocked the bot, the chat is gone).
        """
        if target.hints.get("follow_up"):
            return None
        chat_id = target.hints.get("chat_id") or target.address
        if not chat_id:
            raise ChannelRejected("telegram: the complaint has no chat to answer in")
        message_id = target.hints.get("message_id")
        return await self._send(chat_id, text, int(message_id) if message_id else None)


def _put(cache: OrderedDict[str, str], key: str, value: str) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > ROOTS_KEPT:
        cache.popitem(last=False)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_update(body: bytes, bot: Bot) -> tuple[Update | None, str]:
    """The Update in a webhook body, or None and the reason it is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "body is not JSON"
    if not isinstance(data, dict) or type(data.get("update_id")) is not int:
        return None, "not a Telegram Update (no integer update_id)"
    try:
        return Update.de_json(data, bot), ""
    except Exception:  # PTB raises whatever its constructors raise on malformed fields
        return None, "not a valid Telegram Update"


def _unavailable(detail: str) -> web.Response:
    return web.json_response({"error": "unavailable", "detail": detail}, status=503,
                             headers={"Retry-After": WEBHOOK_RETRY_AFTER_S})


__all__ = ["FloodLimited", "RateLimiter", "TelegramConnector", "translate_error"]
