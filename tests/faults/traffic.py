"""Steady mixed-channel traffic against a gateway, and the exactly-once audit that follows.

Every complaint carries a unique marker in its text (``FLT<run>x<n>``), so the central store
can be audited without knowing how each channel derives its native id. A complaint counts as
*acknowledged* when the channel was told it is safe: a 2xx to the API, the form or the
WhatsApp webhook; for Telegram (polling), the update confirmed by a higher ``getUpdates``
offset; for email, the mailbox answering ``APPEND`` with OK (the message is then in Dovecot,
and the gateway must import it exactly once). Refusals (503 while a fault lasts, connection
refused while the gateway or Dovecot is down) are *not* acknowledged: the channel keeps the
message and sends it again.
"""

from __future__ import annotations

import asyncio
import imaplib
import itertools
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from imapclient import IMAPClient

from tests.emulators.dovecot import DovecotServer
from tests.emulators.graph import (
    EmulatedGraph,
    encode,
    signature,
    wa_change,
    wa_message,
    wa_payload,
)
from tests.emulators.telegram import TelegramEmulator
from tests.integration.support import form_data, open_form

API_KEY = "faults-key"
WA_SECRET = "faults-app-secret"
WA_PNID = "106540352242999"
CHANNELS = ("api", "webform", "whatsapp", "telegram")
MAIL_USER, MAIL_PASSWORD, MAIL_ADDRESS = "gateway", "rahasia", "pengaduan@kaltimprov.go.id"
APPEND_OK = 250  # what an email's item records when the mailbox took it (not an HTTP answer)
MARKER = re.compile(r"FLT[0-9a-f]{6}x\d{5}")


def gateway_env(*, telegram: TelegramEmulator | None, graph: EmulatedGraph | None = None,
                mailbox: DovecotServer | None = None) -> dict[str, str]:
    """The channel configuration of a gateway under test (rate limits off: this is load)."""
    env = {
        "LAPOR_CONNECTORS__API__KEYS": json.dumps({"faults": API_KEY}),
        "LAPOR_CONNECTORS__WHATSAPP__ENABLED": "true",
        "LAPOR_CONNECTORS__WHATSAPP__VERIFY_TOKEN": "faults-verify",
        "LAPOR_CONNECTORS__WHATSAPP__APP_SECRET": WA_SECRET,
        "LAPOR_CONNECTORS__WHATSAPP__ACCESS_TOKEN": graph.token if graph else "no-graph",
        "LAPOR_CONNECTORS__WHATSAPP__PHONE_NUMBER_ID": WA_PNID,
        "LAPOR_CONNECTORS__WHATSAPP__API_BASE": graph.api_base if graph else "http://127.0.0.1:9",
        "LAPOR_GATEWAY__RATE_LIMIT_PER_IP": "0",
        "LAPOR_GATEWAY__RATE_LIMIT_API_PER_IP": "0",
        "LAPOR_GATEWAY__RATE_LIMIT_WEBHOOK_PER_IP": "0",
        "LAPOR_GATEWAY__RATE_LIMIT_PER_PARTNER": "0",
    }
    if telegram is not None:
        env.update({
            "LAPOR_CONNECTORS__TELEGRAM__ENABLED": "true",
            "LAPOR_CONNECTORS__TELEGRAM__MODE": "polling",
            "LAPOR_CONNECTORS__TELEGRAM__TOKEN": telegram.token,
            "LAPOR_CONNECTORS__TELEGRAM__API_BASE": telegram.url,
            "LAPOR_CONNECTORS__TELEGRAM__POLL_TIMEOUT_S": "1",
        })
    if mailbox is not None:
        env.update({
            "LAPOR_CONNECTORS__EMAIL__ENABLED": "true",
            "LAPOR_CONNECTORS__EMAIL__IMAP_HOST": "127.0.0.1",
            "LAPOR_CONNECTORS__EMAIL__IMAP_PORT": str(mailbox.port),
            "LAPOR_CONNECTORS__EMAIL__IMAP_SSL": "false",
            "LAPOR_CONNECTORS__EMAIL__USERNAME": MAIL_USER,
            "LAPOR_CONNECTORS__EMAIL__PASSWORD": MAIL_PASSWORD,
            "LAPOR_CONNECTORS__EMAIL__FROM_ADDRESS": MAIL_ADDRESS,
            "LAPOR_CONNECTORS__EMAIL__MAX_BACKOFF_S": "1",
            "LAPOR_CONNECTORS__EMAIL__TIMEOUT_S": "10",
        })
    return env


def complaint_text(marker: str) -> str:
    return (f"Laporan uji gangguan {marker}: lampu jalan padam dan drainase tersumbat di "
            "Jl. Juanda, mohon ditindaklanjuti.")


@dataclass
class Sent:
    """One complaint sent on one channel."""

    channel: str
    marker: str
    status: int | None = None  # HTTP answer (None: no answer, e.g. connection refused)
    retry_after: str | None = None
    update_id: int | None = None  # Telegram
    submission_id: str | None = None  # the web form's own id, kept for a resubmission
    answers: list[tuple[int | None, str | None]] = field(default_factory=list)  # every try


@dataclass
class Traffic:
    """Sends complaints round-robin over ``channels`` at ``rate`` per second until stopped.

    ``url`` is called for every request, so a restarted gateway on a new port is followed.
    """

    url: Callable[[], str]
    telegram: TelegramEmulator | None = None
    mailbox: DovecotServer | None = None  # the "email" channel appends to its INBOX
    channels: Sequence[str] = CHANNELS
    rate: float = 25.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    sent: list[Sent] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    def marker(self) -> str:
        return f"FLT{self.run_id}x{next(self._numbers):05d}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        # Requests cut off by the cancel got no answer: not acknowledged (and so not counted).

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout,
                                         cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            in_flight: set[asyncio.Task[None]] = set()
            try:
                for channel in itertools.cycle(self.channels):
                    task = asyncio.create_task(self.send(session, channel))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    await asyncio.sleep(1 / self.rate)
            finally:
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def send(self, session: aiohttp.ClientSession, channel: str) -> Sent:
        """Send one complaint on ``channel``; record and return what happened."""
        item = Sent(channel, self.marker())
        self.sent.append(item)
        text = complaint_text(item.marker)
        if channel == "telegram":
            assert self.telegram is not None
            number = int(item.marker[-5:])
            user = self.telegram.user(7_000_000 + number + 1000 * int(self.run_id[:3], 16),
                                      username=None)
            item.update_id = self.telegram.push_message(text, user=user)["update_id"]
            return item
        await self._post(session, item)
        return item

    async def _post(self, session: aiohttp.ClientSession, item: Sent) -> None:
        if item.channel == "email":
            item.status, item.retry_after = await asyncio.to_thread(self._append, item), None
            item.answers.append((item.status, None))
            return
        try:
            item.status, item.retry_after = await _SENDERS[item.channel](
                session, self.url(), item, complaint_text(item.marker))
        except (aiohttp.ClientError, TimeoutError):
            item.status, item.retry_after = None, None
        item.answers.append((item.status, item.retry_after))

    def _append(self, item: Sent) -> int | None:
        """Deliver one citizen's mail into the INBOX (the mail server's part); APPEND_OK, or
        None when Dovecot refused or dropped it (the sending server keeps it and retries:
        the same Message-ID, so a copy that did land is the same complaint)."""
        assert self.mailbox is not None
        number = int(item.marker[-5:])
        raw = (f"From: Warga {number} <warga{number}.{self.run_id}@example.id>\r\n"
               f"To: {MAIL_ADDRESS}\r\nSubject: Laporan lampu jalan\r\n"
               f"Message-ID: <{item.marker}@mail.example.id>\r\n"
               "Content-Type: text/plain; charset=utf-8\r\n\r\n"
               f"{complaint_text(item.marker)}\r\n").encode()
        try:
            client = IMAPClient("127.0.0.1", port=self.mailbox.port, ssl=False, timeout=5)
            try:
                client.login(MAIL_USER, MAIL_PASSWORD)
                client.append("INBOX", raw)
            finally:
                try:
                    client.logout()
                except (OSError, imaplib.IMAP4.error):
                    pass
        except (OSError, imaplib.IMAP4.error):
            return None
        return APPEND_OK

    async def redeliver(self, within: float = 30) -> int:
        """Send every refused complaint again, as its channel would (same message id, same
        form submission), until all are acknowledged or ``within`` passes; returns how many
        were sent again. Telegram redelivers by itself (unconfirmed updates stay queued)."""
        deadline = time.monotonic() + within
        again = 0
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            while time.monotonic() < deadline:
                refused = [i for i in self.sent if i.channel != "telegram"
                           and not (i.status is not None and 200 <= i.status < 300)]
                if not refused:
                    break
                again += len(refused)
                for item in refused:
                    await self._post(session, item)
                if any(i.status is None or i.status >= 500 for i in refused):
                    await asyncio.sleep(0.5)  # the channel's own retry interval
        return again

    def acknowledged(self) -> set[str]:
        """Markers of the complaints whose channel was told they are safe."""
        pending = {u["update_id"] for u in self.telegram.updates} if self.telegram else set()
        acked = set()
        for item in self.sent:
            if item.channel == "telegram":
                if item.update_id not in pending:
                    acked.add(item.marker)
            elif item.status is not None and 200 <= item.status < 300:
                acked.add(item.marker)
        return acked

    def statuses(self) -> Counter[str]:
        """Every answer to the HTTP channels, redeliveries included: ``{"202": n, "503": n,
        "none": n}`` (none: no answer, the gateway was down)."""
        return Counter(str(status or "none") for i in self.sent if i.channel != "email"
                       for status, _ in i.answers)

    def appends(self) -> Counter[str]:
        """Every delivery try of the email channel: ``{"ok": n, "refused": n}``."""
        return Counter("ok" if status == APPEND_OK else "refused"
                       for i in self.sent if i.channel == "email" for status, _ in i.answers)


async def _api(session: aiohttp.ClientSession, url: str, item: Sent,
               text: str) -> tuple[int, str | None]:
    async with session.post(f"{url}/api/v1/complaints", headers={"X-API-Key": API_KEY},
                            json={"external_id": item.marker, "body": text}) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def _webform(session: aiohttp.ClientSession, url: str, item: Sent,
                   text: str) -> tuple[int, str | None]:
    hidden = await open_form(session, url)
    if item.submission_id is None:
        item.submission_id = hidden["submission_id"]
    hidden["submission_id"] = item.submission_id  # a resubmission of the same form
    fields = {"judul": "Lampu jalan padam", "isi": text}
    async with session.post(f"{url}/lapor", data=form_data(hidden, fields)) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


async def _whatsapp(session: aiohttp.ClientSession, url: str, item: Sent,
                    text: str) -> tuple[int, str | None]:
    phone = f"62812{int(item.marker[-5:]) + 10_000 * (int(item.marker[3:6], 16) % 90):07d}"
    body = encode(wa_payload([wa_change(WA_PNID, messages=[
        wa_message(f"wamid.{item.marker}", phone, text={"body": text})],
        contacts=[(phone, "Warga")])]))
    async with session.post(f"{url}/webhooks/whatsapp", data=body, headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": signature(WA_SECRET, body)}) as response:
        await response.read()
        return response.status, response.headers.get("Retry-After")


_SENDERS: dict[str, Callable[[aiohttp.ClientSession, str, Sent, str],
                             Awaitable[tuple[int, str | None]]]] = {
    "api": _api, "webform": _webform, "whatsapp": _whatsapp,
}


@dataclass
class Audit:
    """The exactly-once verdict of one scenario."""

    sent: int
    acknowledged: int
    stored_once: int
    lost: int
    duplicates: int
    redelivered: int = 0

    @classmethod
    def of(cls, traffic: Traffic, payloads: Sequence[str], redelivered: int = 0) -> Audit:
        stored: Counter[str] = Counter()
        for payload in payloads:
            stored.update(set(MARKER.findall(payload)))
        acked = traffic.acknowledged()
        mine = {i.marker for i in traffic.sent}
        return cls(
            sent=len(traffic.sent),
            acknowledged=len(acked),
            stored_once=sum(1 for m in acked if stored[m] == 1),
            lost=sum(1 for m in acked if stored[m] == 0),
            duplicates=sum(n - 1 for m, n in stored.items() if m in mine and n > 1),
            redelivered=redelivered,
        )

    @property
    def ok(self) -> bool:
        """Nothing acknowledged lost, nothing twice, and (after the channels' redelivery)
        every complaint sent acknowledged."""
        return (self.lost == 0 and self.duplicates == 0
                and self.stored_once == self.acknowledged == self.sent)


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 1)


def payload_rows(rows: Sequence[Any]) -> list[str]:
    return [str(r[0]) for r in rows]
