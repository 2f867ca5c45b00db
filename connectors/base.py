"""The connector interface, the `Intake` a connector calls, and the shared bookkeeping.

A connector turns channel messages into :class:`RawMessage` objects and hands each to
:meth:`Intake.submit`. The rule that keeps complaints from being lost: **acknowledge upstream
(HTTP 2xx, IMAP flag, getUpdates offset, since_id) only after ``submit`` returned**, because
only then is the complaint durable. A redelivery after a crash is absorbed by exact dedup.

Lifecycle, all called from the gateway's event loop:

* ``start(intake)``: once, at start-up. A pull connector starts its loop task here; a push
  connector only remembers the intake (its routes are mounted already).
* ``stop()``: once, at shutdown. Signals the loop and waits for in-flight messages to finish;
  messages not yet submitted stay un-acknowledged upstream and are redelivered later.
* ``health()``: any time; cheap, never raises.
* ``routes()``: once, before ``start``; the aiohttp routes of a push connector.
* ``replay(payload, content_type)``: on an operator's request; a dead letter this connector
  kept goes through the connector's parsing again (after a fix).
"""

from __future__ import annotations

import time
from abc import ABC
from collections.abc import Awaitable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol

from aiohttp import web

from errors import ValidationFailed
from normalizer.ids import complaint_id
from normalizer.raw import RawMessage, Sender
from normalizer.schema import Attachment

__all__ = [
    "Attachment",
    "BaseConnector",
    "ConnectorState",
    "Health",
    "Intake",
    "IntakeResult",
    "MEDIA_REF",
    "RawMessage",
    "ReplyTarget",
    "Sender",
]


#: The content type of a dead letter that is a medium which never downloaded: a JSON
#: reference to it (and the complaint it belongs to) that the connector's ``replay`` fetches.
MEDIA_REF = "application/vnd.lapor.media-ref+json"

#: What every log line written while a message is handled carries (``connector``,
#: ``complaint_id``): set by :meth:`BaseConnector.submit`, read by the CLI's JSON log format.
LOG_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("lapor_log_context", default=None)
#: The newest result of :meth:`BaseConnector.submit` in the current task (see ``captured``).
_SUBMITTED: ContextVar[IntakeResult | None] = ContextVar("lapor_submitted", default=None)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What the intake made of a message: the complaint it is (new or already known)."""

    complaint_id: str
    tracking_code: str
    duplicate: bool


class Intake(Protocol):
    """What a connector calls. Implemented by ``gateway.intake.GatewayIntake``."""

    async def submit(self, raw: RawMessage) -> IntakeResult:
        """Normalise, dedup and write ``raw`` to the durable outbox; return once durable.

        Raises ``ValidationFailed`` (the message cannot be a complaint: tell the sender, do not
        retry) or ``StoreUnavailable`` (retriable: leave the message un-acknowledged).
        """
        ...

    async def store_attachment(self, *, name: str, declared_type: str | None,
                               data: bytes) -> Attachment:
        """Store attachment bytes durably (content-addressed) and return the reference.

        Raises ``AttachmentRejected`` for a refused type or size.
        """
        ...

    async def recent_complaint(self, *, channel: str, account: str, sender_key: str,
                               within_s: float) -> IntakeResult | None:
        """The newest complaint this sender made on this channel in the last ``within_s``
        seconds (an open conversation), or None. A connector sets ``RawMessage.thread_of`` to
        its id to make a follow-up message part of that complaint instead of a new one."""
        ...

    async def dead_letter(self, *, channel: str, account: str, reason: str, payload: bytes,
                          content_type: str) -> str:
        """Keep a message that cannot become a complaint (unparseable, unsupported), raw bytes
        and reason, durably; returns the dead letter's id. Acknowledge upstream afterwards:
        retrying the same bytes cannot help, and an operator can replay after a fix."""
        ...

    async def record_delivery(self, *, channel: str, provider_id: str, state: str,
                              at: float | None = None, error: str | None = None) -> None:
        """Record what the channel reports about a reply we sent (``provider_id`` as returned
        by :meth:`BaseConnector.send_reply`): sent, delivered, read or failed. Reports may
        arrive late and out of order; the stored state only moves forward."""
        ...

    async def public_status(self, typed_code: str) -> Mapping[str, object] | None:
        """The public status of a complaint by the code a citizen typed (``STATUS KODE``,
        ``/status KODE``): ``tracking_code``, ``status``, ``status_label`` (Bahasa Indonesia),
        ``received_at``, ``channel``, ``title`` (None when confidential), ``agency``,
        ``confidential``. Never the reporter's identity. None for an unknown code."""
        ...

    async def withdraw(self, *, channel: str, account: str, sender_key: str | None,
                       typed_code: str | None) -> str:
        """Withdraw a complaint for its reporter (``/batal``, ``BATAL KODE``) and return the
        answer to send them (Bahasa Indonesia). Only the sender the complaint came from
        (same channel, account and ``sender_key``), within the configured window; without a
        code, the sender's newest complaint. Never raises for a refusal (the answer says why)."""
        ...

    async def load_cursor(self, name: str) -> str | None:
        """A pull connector's durable source position (e.g. ``telegram:<bot>:offset``)."""
        ...

    async def save_cursor(self, name: str, value: str) -> None:
        """Persist a source position. Call only after every message before it was submitted."""
        ...

    async def list_cursors(self, prefix: str) -> dict[str, str]:
        """Every saved cursor whose name starts with ``prefix`` (small durable connector state
        such as pending media downloads, resumed at start)."""
        ...

    async def delete_cursor(self, name: str) -> None:
        """Forget a cursor (its work is done)."""
        ...


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where an answer to a complaint goes: back on the channel it came from.

    Built by the reply loop from what the intake kept: the channel, our account, the native id
    of the citizen's message (to thread the answer: ``reply_to_message_id``,
    ``In-Reply-To``, ``in_reply_to_tweet_id``), the citizen's address on that channel, and the
    ``reply_hints`` the connector put on the :class:`RawMessage`.
    """

    complaint_id: str
    tracking_code: str
    channel: str
    account: str
    native_id: str
    address: str | None
    hints: Mapping[str, str] = field(default_factory=dict)
    kind: str = "ack"  # the reply queue's kind: "ack", "status:<event id>", "<kind>><channel>"


class ConnectorState(StrEnum):
    """Kafka Connect style connector states."""

    RUNNING = "running"
    DEGRADED = "degraded"
    FAILED = "failed"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass
class Health:
    """A connector's health, as the ops API and ``lapor-gateway status`` show it."""

    state: ConnectorState = ConnectorState.STOPPED
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    counters: dict[str, int] = field(default_factory=dict)


class BaseConnector(ABC):
    """Base of every channel connector: lifecycle defaults and health bookkeeping.

    Subclasses set ``name`` and override what they need; :meth:`submit` wraps the intake with
    the counters (received / accepted / duplicates / rejected / errors).
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self._intake: Intake | None = None
        self._health = Health()

    def routes(self) -> list[web.AbstractRouteDef]:
        """The aiohttp routes this connector serves (none for a pull connector)."""
        return []

    async def start(self, intake: Intake) -> None:
        """Begin: remember the intake; pull connectors also start their loop."""
        self._intake = intake
        self._health.state = ConnectorState.RUNNING

    async def stop(self) -> None:
        """Signal and drain; push connectors have nothing in flight of their own."""
        self._health.state = ConnectorState.STOPPED

    def pause(self) -> None:
        """An operator's pause: push routes answer 503 (the channel retries later), pull
        loops stop fetching; nothing already accepted is affected."""
        if self._health.state in (ConnectorState.RUNNING, ConnectorState.DEGRADED):
            self._health.state = ConnectorState.PAUSED

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        if self._health.state is ConnectorState.PAUSED:
            self._health.state = ConnectorState.RUNNING

    def health(self) -> Health:
        """A snapshot of this connector's health."""
        return Health(self._health.state, self._health.last_success, self._health.last_error,
                      self._health.last_error_at, dict(self._health.counters))

    #: Whether this connector answers citizens through :meth:`send_reply` (the reply loop
    #: owes nothing on channels without; an instance may turn it off by configuration).
    replies: bool = False

    @property
    def channels(self) -> tuple[str, ...]:
        """The ``RawMessage.channel`` values this connector produces (and answers on)."""
        return (self.name,)

    async def send_reply(self, target: ReplyTarget, text: str) -> str | None:
        """Send ``text`` to the citizen on this channel; return the provider's message id.

        Called from the reply loop's task (durable queue, retried), at most once at a time per
        complaint, after the complaint is stored centrally. Raise a retriable ``LaporError``
        (e.g. ``ChannelUnavailable``, with ``retry_after`` from a 429) for transient failures
        and a non-retriable one (e.g. ``ChannelRejected``) when retrying cannot help.
        """
        raise NotImplementedError(f"connector {self.name} does not send replies")

    async def replay(self, payload: bytes, content_type: str) -> IntakeResult | None:
        """Send the raw payload of a dead letter this connector kept through it again.

        Called from an ops request after an operator fixed what made it fail. Returns the
        complaint it became, or None when the payload was deliberately ignored (not a
        complaint). Raises ``ValidationFailed`` when it still cannot become a complaint (the
        dead letter stays); exact dedup makes a second replay of the same payload harmless.
        The default: this connector cannot replay.
        """
        raise ValidationFailed(f"connector {self.name} cannot replay dead letters")

    @property
    def intake(self) -> Intake:
        if self._intake is None:
            raise RuntimeError(f"connector {self.name} used before start()")
        return self._intake

    @property
    def accepting(self) -> bool:
        """Whether new messages may be submitted (running or degraded)."""
        return self._health.state in (ConnectorState.RUNNING, ConnectorState.DEGRADED)

    def count(self, counter: str, n: int = 1) -> None:
        self._health.counters[counter] = self._health.counters.get(counter, 0) + n

    def record_error(self, error: str) -> None:
        self._health.last_error = error
        self._health.last_error_at = time.time()
        self.count("errors")

    async def submit(self, raw: RawMessage) -> IntakeResult:
        """Submit through the intake, keeping the counters. Errors propagate unchanged."""
        self.count("received")
        token = LOG_CONTEXT.set({"connector": self.name, "complaint_id": complaint_id(
            raw.channel, raw.account, raw.native_id)})
        try:
            result = await self.intake.submit(raw)
        except ValidationFailed:
            self.count("rejected")
            raise
        except Exception as exc:
            self.record_error(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            LOG_CONTEXT.reset(token)
        self.count("duplicates" if result.duplicate else "accepted")
        self._health.last_success = time.time()
        _SUBMITTED.set(result)
        return result

    @staticmethod
    async def captured(work: Awaitable[object]) -> IntakeResult | None:
        """Run ``work`` (e.g. a connector's own message handling) in this task and return
        what it submitted last, or None: how a :meth:`replay` learns the complaint a payload
        became, unaffected by messages other tasks submit meanwhile."""
        token = _SUBMITTED.set(None)
        try:
            await work
            return _SUBMITTED.get()
        finally:
            _SUBMITTED.reset(token)
