"""Alerts: a channel that fails, degrades or silently stops is noticed, not discovered later.

Two halves. The pure core (:func:`evaluate`, :func:`usual_gap`, :class:`AlertBook`) decides,
from one :class:`Observation` and a clock value, which conditions hold and which alerts are
newly raised or resolved; unit tests drive it with a fake clock. :class:`AlertEvaluator` is the
periodic task that observes the running gateway, persists the alerts (``alerts`` table), and
delivers each raise and each resolve once: to the Kafka topic ``complaints.alerts.v1`` (with
the topic prefix) and, when configured, to a webhook.

Conditions:

* ``connector_failed`` / ``connector_degraded``: the connector's state.
* ``silent_channel``: no message for longer than the channel's usual gap (a high percentile of
  its own recent inter-arrival gaps × a factor, at least a floor), once it has enough history.
* ``outbox_age``: the oldest undelivered outbox entry is older than the threshold.
* ``dead_letters_growing``: new dead letters within the window.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import aiohttp
import orjson

from config.settings import OpsSettings
from normalizer.pii import mask_pii

log = logging.getLogger(__name__)

CE_TYPE_ALERT = "id.go.lapor.alert.v1"
ALERT_TOPIC = "complaints.alerts.v1"  # prefixed with kafka.topic_prefix, like every topic
WEBHOOK_TIMEOUT_S = 5.0  # one slow receiver must not hold back the evaluator


@dataclass(frozen=True, slots=True)
class Alert:
    """One condition that holds; ``key`` identifies it while it stays open."""

    kind: str
    subject: str
    severity: str
    message: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class Observation:
    """What the evaluator saw at one moment (epoch seconds)."""

    now: float
    connectors: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # state, error
    arrivals: Mapping[str, Sequence[float]] = field(default_factory=dict)  # ascending, per channel
    outbox_age_s: float = 0.0
    dead_letters: int = 0  # never successfully replayed


def usual_gap(arrivals: Sequence[float], settings: OpsSettings) -> float | None:
    """The longest silence that is still normal for this channel, or None without enough
    history: the ``silent_percentile`` of its gaps × ``silent_factor``, at least
    ``silent_min_gap_s``."""
    if len(arrivals) < settings.silent_min_history + 1:
        return None
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:], strict=False))
    rank = min(len(gaps) - 1, max(0, math.ceil(settings.silent_percentile / 100 * len(gaps)) - 1))
    return max(settings.silent_min_gap_s, gaps[rank] * settings.silent_factor)


def evaluate(seen: Observation, settings: OpsSettings, dead_letters_before: int) -> list[Alert]:
    """Every condition that holds in ``seen``; ``dead_letters_before`` is the dead-letter count
    one window ago."""
    alerts: list[Alert] = []
    for name, (state, error) in sorted(seen.connectors.items()):
        # Errors may quote what a channel sent back: never a citizen's contact details.
        why = f": {mask_pii(error[:300]).text}" if error else ""
        if state == "failed":
            alerts.append(Alert("connector_failed", name, "critical",
                                f"connector {name} failed{why}"))
        elif state == "degraded":
            alerts.append(Alert("connector_degraded", name, "warning",
                                f"connector {name} degraded{why}"))
    for channel, arrivals in sorted(seen.arrivals.items()):
        gap = usual_gap(arrivals, settings)
        if gap is not None and seen.now - arrivals[-1] > gap:
            quiet = seen.now - arrivals[-1]
            alerts.append(Alert("silent_channel", channel, "warning",
                                f"no message on {channel} for {quiet / 60:.0f} min "
                                f"(usually at most {gap / 60:.0f} min)"))
    if seen.outbox_age_s > settings.outbox_age_alert_s:
        alerts.append(Alert("outbox_age", "outbox", "critical",
                            f"oldest undelivered complaint waits {seen.outbox_age_s:.0f}s "
                            f"(threshold {settings.outbox_age_alert_s:.0f}s)"))
    growth = seen.dead_letters - dead_letters_before
    if growth >= settings.dead_letter_growth:
        alerts.append(Alert("dead_letters_growing", "dead_letters", "warning",
                            f"{growth} new dead letter(s) in the last "
                            f"{settings.dead_letter_window_s / 60:.0f} min"))
    return alerts


class AlertBook:
    """The open alerts: each condition is raised once and resolved once."""

    def __init__(self, open_alerts: Sequence[Alert] = ()) -> None:
        self.open: dict[str, Alert] = {a.key: a for a in open_alerts}

    def update(self, active: Sequence[Alert]) -> tuple[list[Alert], list[Alert]]:
        """Take the conditions that hold now; return (newly raised, newly resolved)."""
        now = {a.key: a for a in active}
        raised = [a for key, a in now.items() if key not in self.open]
        resolved = [a for key, a in self.open.items() if key not in now]
        for alert in resolved:
            del self.open[alert.key]
        for alert in raised:
            self.open[alert.key] = alert
        return raised, resolved


class DeadLetterHistory:
    """Dead-letter counts over time, to tell how many arrived within the window."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def before(self, now: float, count: int) -> int:
        """Record ``count`` at ``now``; return the count at the start of the window."""
        self._samples.append((now, count))
        while len(self._samples) > 1 and self._samples[1][0] <= now - self._window_s:
            self._samples.popleft()
        return self._samples[0][1]


# --------------------------------------------------------------------------- the periodic task


class AlertSink(Protocol):
    """Where raised and resolved alerts go (Kafka, a webhook, the alerts table)."""

    async def __call__(self, event: dict[str, object]) -> None: ...


class AlertStore(Protocol):
    """The persisted alerts (implemented by ``gateway.ops_store.OpsStore``)."""

    async def open_alerts(self) -> list[Alert]: ...
    async def raise_alert(self, alert: Alert, at: float) -> bool:
        """Persist; False when another instance has it open already (not delivered)."""
        ...
    async def resolve_alert(self, alert: Alert, at: float) -> bool:
        """Persist; False when it was resolved already (not delivered)."""
        ...


class AlertEvaluator:
    """Observes every ``alert_interval_s`` and delivers what changed."""

    def __init__(self, settings: OpsSettings, observe: Callable[[], Awaitable[Observation]],
                 store: AlertStore, sinks: Sequence[AlertSink],
                 clock: Callable[[], float]) -> None:
        self._settings = settings
        self._observe = observe
        self._store = store
        self._sinks = list(sinks)
        self._clock = clock
        self._book: AlertBook | None = None
        self._dead = DeadLetterHistory(settings.dead_letter_window_s)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def tick(self) -> tuple[list[Alert], list[Alert]]:
        """One evaluation: observe, decide, persist, deliver. Returns what was raised and
        resolved here (an alert another instance raised or resolved first is not delivered
        again)."""
        if self._book is None:
            self._book = AlertBook(await self._store.open_alerts())
        seen = await self._observe()
        active = evaluate(seen, self._settings, self._dead.before(seen.now, seen.dead_letters))
        raised, resolved = self._book.update(active)
        now = self._clock()
        raised = [a for a in raised if await self._store.raise_alert(a, now)]
        resolved = [a for a in resolved if await self._store.resolve_alert(a, now)]
        for alert in raised:
            log.warning("alert raised: %s", alert.message, extra=_log_fields(alert))
        for alert in resolved:
            log.info("alert resolved: %s", alert.key, extra=_log_fields(alert))
        for state, alerts in (("raised", raised), ("resolved", resolved)):
            for alert in alerts:
                await self._deliver({**asdict(alert), "key": alert.key, "state": state,
                                     "at": now})
        return raised, resolved

    async def _deliver(self, event: dict[str, object]) -> None:
        for sink in self._sinks:
            try:
                await sink(event)
            except Exception as exc:  # one failing receiver must not silence the others
                log.warning("alert delivery failed (%s): %s", type(sink).__name__, exc)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="alerts")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.tick()
            except Exception:  # the evaluator must outlive a store hiccup
                log.exception("alert evaluation failed")
            try:
                await asyncio.wait_for(self._stopping.wait(), self._settings.alert_interval_s)
            except TimeoutError:
                pass


def _log_fields(alert: Alert) -> dict[str, str]:
    fields = {"alert": alert.key}
    if alert.kind.startswith("connector_"):
        fields["connector"] = alert.subject
    return fields


class WebhookSink:
    """POSTs each alert event as JSON to ``ops.alert_webhook_url``."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def __call__(self, event: dict[str, object]) -> None:
        timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                self._url, data=orjson.dumps(event),
                headers={"Content-Type": "application/json"}) as response:
            if response.status >= 300:
                raise RuntimeError(f"webhook answered {response.status}")
