"""One mailbox read by imapclient in its own thread (imapclient is synchronous and not thread
safe: docs/CHANNELS.md 3.1). The thread never touches the event loop's objects; it calls a
:class:`MailboxBridge` whose blocking methods the connector implements on the loop.

The loop of a worker, per connection:

1. ``LOGIN``, ``SELECT folder``; read ``UIDVALIDITY``. The durable cursor
   (``email:<account>:<folder>``) holds ``uidvalidity``, ``last_uid`` and ``since`` (the first
   connection's date minus ``backfill_days``). No cursor: a new one starting at ``since``. A
   different ``UIDVALIDITY``: UIDs mean nothing any more, so ``last_uid`` restarts at 0; every
   message since ``since`` without our keyword is read again and exact dedup (Message-ID)
   makes that harmless.
2. ``UID SEARCH UID last+1:* NOT KEYWORD <done> SINCE <since>``, filtered ``uid > last`` on our
   side (``n:*`` also matches the highest UID below n: CHANNELS.md 3.2), in batches of
   ``fetch_batch``: ``UID FETCH (RFC822.SIZE BODY.PEEK[])`` (``\\Seen`` untouched), the bridge
   makes each message durable (or records it), **then** ``\\Seen`` and the keyword are set on
   exactly those, **then** the cursor moves to the highest UID below which everything is done.
3. Wait: ``IDLE`` when offered (re-issued every ``idle_renew_s``; checked every second so
   ``stop()`` is prompt), else poll every ``poll_interval_s``.

A dropped connection, a server restart or a timeout: reconnect with exponential backoff up to
``max_backoff_s``. Nothing is lost (un-flagged messages are found again) and nothing is
imported twice (flags, cursor and dedup).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

import orjson
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from config.email import EmailSettings, MailboxSettings
from errors import LaporError

log = logging.getLogger(__name__)

SEEN = b"\\Seen"
IDLE_CHECK_S = 1.0  # longest time an IDLE wait ignores stop() and pause()
FIRST_BACKOFF_S = 1.0
#: Most message bytes fetched and held at once (a batch of large mails is fetched in parts).
BATCH_BYTES = 64 * 1024 * 1024
EOF_CHECKS = 3  # empty IDLE checks in a row that return at once: the server closed the socket
#: What a dropped connection, a restarted server or a timeout raise inside imapclient.
CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    IMAPClientError, imaplib.IMAP4.error, OSError, ssl.SSLError, EOFError, LaporError)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a mailbox's reading stands (persisted as JSON)."""

    uidvalidity: int
    last_uid: int
    since: date

    def dumps(self) -> str:
        return orjson.dumps({"uidvalidity": self.uidvalidity, "last_uid": self.last_uid,
                             "since": self.since.isoformat()}).decode()

    @classmethod
    def loads(cls, value: str) -> Cursor | None:
        try:
            data = orjson.loads(value)
            return cls(int(data["uidvalidity"]), int(data["last_uid"]),
                       date.fromisoformat(data["since"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message as fetched: its UID and bytes (``BODY[]``, or only ``BODY[HEADER]`` when
    it is over ``max_message_bytes``)."""

    uid: int
    raw: bytes
    size: int
    too_large: bool = False


class MailboxBridge(Protocol):
    """What a worker thread asks of the connector. Every method blocks the calling (worker)
    thread, never the event loop."""

    def load_cursor(self) -> Cursor | None: ...

    def save_cursor(self, cursor: Cursor) -> None: ...

    def process(self, uidvalidity: int, items: Sequence[Fetched]) -> set[int]:
        """Make each message durable (a complaint) or recorded (a dead letter); return the
        UIDs for which that is done. Messages not returned are retried later."""
        ...

    def paused(self) -> bool: ...

    def report(self, error: str | None) -> None:
        """``None``: the mailbox works; else what went wrong (the connector degrades)."""
        ...


class _Retry(LaporError):
    """Some messages of a batch were not stored: reconnect after a backoff and read again."""

    retriable = True


class _Stopping(Exception):
    """Raised inside the worker to leave the session promptly."""


class MailboxWorker:
    """The thread reading one mailbox."""

    def __init__(self, box: MailboxSettings, settings: EmailSettings,
                 bridge: MailboxBridge) -> None:
        self.box = box
        self._settings = settings
        self._bridge = bridge
        self._stop = threading.Event()
        self._client: IMAPClient | None = None
        self._selected = False  # the current session got as far as SELECT
        self._keyword = settings.done_keyword.encode()
        self._flags = [SEEN, self._keyword]  # set on a message once it is durable
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"imap-{box.from_address}")

    # ----------------------------------------------------------------- control (any thread)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to leave (within ``IDLE_CHECK_S`` while waiting)."""
        self._stop.set()

    def abort(self) -> None:
        """Break a blocking read by shutting the socket down (after ``stop``)."""
        client = self._client
        if client is not None:
            with contextlib.suppress(OSError, AttributeError):
                client.socket().shutdown(socket.SHUT_RDWR)

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping

    # ----------------------------------------------------------------- the thread

    def _run(self) -> None:
        """Sessions until stopped. The wait after a failure doubles up to ``max_backoff_s``
        and starts again at ``FIRST_BACKOFF_S`` once a session had selected the folder (a
        drop after hours of work is retried at once); a refused login waits the longest."""
        backoff = FIRST_BACKOFF_S
        while not self._stop.is_set():
            self._selected = False
            try:
                self._session()
            except _Stopping:
                break
            except LoginError as exc:
                self._bridge.report(f"IMAP login refused for {self.box.username}: {exc}")
                backoff = self._settings.max_backoff_s
            except _Retry as exc:  # the store, not the connection: keep backing off
                self._bridge.report(str(exc))
                self._selected = False
            except CONNECTION_ERRORS as exc:
                if self._stop.is_set():
                    break
                self._bridge.report(f"{type(exc).__name__}: {exc}")
                log.warning("email %s: %s: %s; reconnecting", self.box.from_address,
                            type(exc).__name__, exc)
            except Exception as exc:  # a bug must not end the mailbox's thread
                log.exception("email %s: worker error", self.box.from_address)
                self._bridge.report(f"{type(exc).__name__}: {exc}")
            finally:
                self._close()
            if self._selected:
                backoff = FIRST_BACKOFF_S
            try:
                self._wait(backoff)
            except _Stopping:
                break
            backoff = min(self._settings.max_backoff_s, backoff * 2)

    def _connect(self) -> IMAPClient:
        box = self.box
        client = IMAPClient(box.imap_host, port=box.imap_port, ssl=box.imap_ssl,
                            timeout=self._settings.timeout_s)
        self._client = client
        client.login(box.username, box.password.get_secret_value())
        return client

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(*CONNECTION_ERRORS):
            client.logout()
        with contextlib.suppress(*CONNECTION_ERRORS):
            client.shutdown()

    def _session(self) -> None:
        client = self._connect()
        if self._stop.is_set():
            raise _Stopping
        info = client.select_folder(self.box.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        permanent = info.get(b"PERMANENTFLAGS", ())
        self._flags = [SEEN, self._keyword] if (b"\\*" in permanent
                                                or self._keyword in permanent) else [SEEN]
        if len(self._flags) == 1:
            log.warning("email %s: %s allows no keywords; only \\Seen is set (the cursor "
                        "alone remembers what was read)", self.box.from_address,
                        self.box.folder)
        cursor = self._cursor(uidvalidity)
        self._selected = True
        idle = client.has_capability("IDLE")
        self._bridge.report(None)
        log.info("email %s: %s selected (uidvalidity %d, from uid %d, %s)",
                 self.box.from_address, self.box.folder, uidvalidity, cursor.last_uid,
                 "IDLE" if idle else "polling")
        while True:
            if self._stop.is_set():
                raise _Stopping
            if not self._bridge.paused():
                cursor = self._drain(client, cursor)
            if idle:
                self._idle(client)
            else:
                self._wait(self._settings.poll_interval_s)
                client.noop()

    def _cursor(self, uidvalidity: int) -> Cursor:
        saved = self._bridge.load_cursor()
        if saved is None:
            since = datetime.now(UTC).date() - timedelta(days=self._settings.backfill_days)
            cursor = Cursor(uidvalidity, 0, since)
            self._bridge.save_cursor(cursor)
            return cursor
        if saved.uidvalidity != uidvalidity:
            log.warning("email %s: UIDVALIDITY of %s changed (%d -> %d): rescanning since %s",
                        self.box.from_address, self.box.folder, saved.uidvalidity,
                        uidvalidity, saved.since)
            cursor = Cursor(uidvalidity, 0, saved.since)
            self._bridge.save_cursor(cursor)
            return cursor
        return saved

    def _pending(self, client: IMAPClient, cursor: Cursor) -> list[int]:
        found = client.search(["UID", f"{cursor.last_uid + 1}:*", "NOT", "KEYWORD",
                               self._keyword, "SINCE", cursor.since])
        return sorted(uid for uid in found if uid > cursor.last_uid)

    def _drain(self, client: IMAPClient, cursor: Cursor) -> Cursor:
        """Read everything pending; return the advanced cursor.

        Ends with a search that finds nothing: mail that arrived during the drain was
        announced in the answer to one of our commands (imapclient keeps such EXISTS where
        ``idle_check`` never sees them), so it must be found here, not waited for in IDLE.
        """
        while pending := self._pending(client, cursor):
            for start in range(0, len(pending), self._settings.fetch_batch):
                uids = pending[start:start + self._settings.fetch_batch]
                sizes = {uid: int(data.get(b"RFC822.SIZE", 0))
                         for uid, data in client.fetch(uids, ["RFC822.SIZE"]).items()}
                for chunk in _by_size(uids, sizes, self._settings.max_message_bytes):
                    if self._stop.is_set() or self._bridge.paused():
                        return cursor
                    cursor = self._batch(client, cursor, chunk, sizes)
        return cursor

    def _batch(self, client: IMAPClient, cursor: Cursor, uids: list[int],
               sizes: dict[int, int]) -> Cursor:
        """Fetch, hand over, flag what is done, then advance and save the cursor."""
        items = self._fetch(client, uids, sizes)
        done = self._bridge.process(cursor.uidvalidity, items)
        fetched = {item.uid for item in items}
        done |= set(uids) - fetched  # expunged meanwhile: nothing left to read
        flagged = sorted(done & fetched)
        if flagged:
            client.add_flags(flagged, self._flags, silent=True)
        last = cursor.last_uid
        for uid in uids:
            if uid not in done:
                break
            last = uid
        if last != cursor.last_uid:
            cursor = Cursor(cursor.uidvalidity, last, cursor.since)
            self._bridge.save_cursor(cursor)
        if len(done) < len(uids):
            # The store refused some: leave them un-flagged; back off and read again.
            raise _Retry("some messages could not be stored yet")
        return cursor

    def _fetch(self, client: IMAPClient, uids: list[int],
               sizes: dict[int, int]) -> list[Fetched]:
        limit = self._settings.max_message_bytes
        small = [uid for uid in uids if uid in sizes and sizes[uid] <= limit]
        large = [uid for uid in uids if uid in sizes and sizes[uid] > limit]
        items: list[Fetched] = []
        if small:
            for uid, data in client.fetch(small, ["BODY.PEEK[]"]).items():
                raw = data.get(b"BODY[]")
                if isinstance(raw, bytes):
                    items.append(Fetched(uid, raw, sizes[uid]))
        if large:
            for uid, data in client.fetch(large, ["BODY.PEEK[HEADER]"]).items():
                raw = data.get(b"BODY[HEADER]")
                items.append(Fetched(uid, raw if isinstance(raw, bytes) else b"", sizes[uid],
                                     too_large=True))
        return sorted(items, key=lambda item: item.uid)

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until the mailbox changes, ``idle_renew_s`` passes, or stop/pause."""
        paused = self._bridge.paused()
        client.idle()
        started = time.monotonic()
        try:
            quick_empty = 0
            while not self._stop.is_set():
                checked = time.monotonic()
                responses = client.idle_check(timeout=IDLE_CHECK_S)
                # imapclient swallows EOF in idle_check (the socket stays readable and
                # nothing comes): a few empty answers in a row without waiting is a drop.
                if not responses and time.monotonic() - checked < IDLE_CHECK_S / 2:
                    quick_empty += 1
                    if quick_empty >= EOF_CHECKS:
                        raise ConnectionResetError("IMAP connection closed during IDLE")
                else:
                    quick_empty = 0
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    break
                if time.monotonic() - started >= self._settings.idle_renew_s:
                    break
                if paused and not self._bridge.paused():  # resumed: read what waited
                    break
        finally:
            # Always end IDLE: a LOGOUT sent during IDLE would wait for the server's timeout.
            if self._stop.is_set():
                with contextlib.suppress(*CONNECTION_ERRORS):
                    client.idle_done()
            else:
                client.idle_done()
        if self._stop.is_set():
            raise _Stopping


def _by_size(uids: list[int], sizes: dict[int, int], largest: int) -> list[list[int]]:
    """``uids`` in order, cut so that no chunk holds more than ``BATCH_BYTES`` of messages
    (an oversized message counts as its header only). A chunk has at least one UID."""
    chunks: list[list[int]] = [[]]
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        size = size if size <= largest else 0
        if chunks[-1] and total + size > BATCH_BYTES:
            chunks.append([])
            total = 0
        chunks[-1].append(uid)
        total += size
    return chunks
