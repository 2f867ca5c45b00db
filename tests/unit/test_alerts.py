"""The alert rules on a fake clock: failed/degraded connectors, silent channels learned from
their own history, outbox age, growing dead letters; raised once, resolved once."""

from __future__ import annotations

from collections.abc import Sequence

from config.settings import OpsSettings
from gateway.alerts import (
    Alert,
    AlertBook,
    AlertEvaluator,
    DeadLetterHistory,
    Observation,
    evaluate,
    usual_gap,
)

OPS = OpsSettings(silent_min_history=5, silent_min_gap_s=60, silent_factor=3,
                  silent_percentile=100, outbox_age_alert_s=300, dead_letter_window_s=600)


def kinds(alerts: Sequence[Alert]) -> set[str]:
    return {a.key for a in alerts}


def test_connector_states_raise_their_alerts() -> None:
    seen = Observation(now=1000, connectors={"x": ("degraded", "HTTP 500"),
                                             "telegram": ("failed", "token rejected"),
                                             "api": ("running", None), "sms": ("paused", None)})
    alerts = evaluate(seen, OPS, 0)
    assert kinds(alerts) == {"connector_degraded:x", "connector_failed:telegram"}
    assert next(a for a in alerts if a.subject == "telegram").severity == "critical"
    assert "HTTP 500" in next(a for a in alerts if a.subject == "x").message
    leaky = Observation(now=0, connectors={"sms": ("degraded", "bad number +6281234567890")})
    [alert] = evaluate(leaky, OPS, 0)
    assert "81234567890" not in alert.message and "bad number" in alert.message


def test_usual_gap_is_learned_from_the_channel_history() -> None:
    regular = [i * 600.0 for i in range(6)]  # every ten minutes
    assert usual_gap(regular[:5], OPS) is None  # four gaps: not enough history yet
    assert usual_gap(regular, OPS) == 1800.0  # 10 min x factor 3
    busy = [i * 5.0 for i in range(6)]  # every five seconds: the floor applies
    assert usual_gap(busy, OPS) == 60.0


def test_a_channel_is_silent_only_after_its_usual_gap() -> None:
    arrivals = [i * 600.0 for i in range(6)]  # last message at t=3000, usual gap 1800 s
    quiet = Observation(now=3000 + 1799, arrivals={"sms": arrivals})
    assert evaluate(quiet, OPS, 0) == []
    silent = Observation(now=3000 + 1801, arrivals={"sms": arrivals})
    [alert] = evaluate(silent, OPS, 0)
    assert alert.key == "silent_channel:sms"
    # A channel that never had enough traffic is never called silent.
    sparse = Observation(now=10**9, arrivals={"email": [0.0, 10.0]})
    assert evaluate(sparse, OPS, 0) == []


def test_outbox_age_and_dead_letter_growth() -> None:
    assert kinds(evaluate(Observation(now=0, outbox_age_s=301), OPS, 0)) == {"outbox_age:outbox"}
    assert evaluate(Observation(now=0, outbox_age_s=299), OPS, 0) == []
    assert kinds(evaluate(Observation(now=0, dead_letters=4), OPS, 3)) == {
        "dead_letters_growing:dead_letters"}
    assert evaluate(Observation(now=0, dead_letters=4), OPS, 4) == []


def test_dead_letter_history_compares_with_the_start_of_the_window() -> None:
    history = DeadLetterHistory(window_s=600)
    assert history.before(0, 2) == 2
    assert history.before(300, 3) == 2
    # At t=700 the window starts at t=100, when the count was still 2 (last seen at t=0).
    assert history.before(700, 3) == 2
    assert history.before(1000, 3) == 3  # window from t=400: the count was 3 since t=300


def test_the_book_raises_once_and_resolves_once() -> None:
    book = AlertBook()
    degraded = Alert("connector_degraded", "x", "warning", "x degraded")
    assert book.update([degraded]) == ([degraded], [])
    assert book.update([degraded]) == ([], [])  # still degraded: nothing new
    assert book.update([]) == ([], [degraded])
    assert book.update([]) == ([], [])


class FakeStore:
    def __init__(self, open_alerts: list[Alert]) -> None:
        self.open = {a.key: a for a in open_alerts}
        self.log: list[tuple[str, str, float]] = []

    async def open_alerts(self) -> list[Alert]:
        return list(self.open.values())

    async def raise_alert(self, alert: Alert, at: float) -> bool:
        if alert.key in self.open:  # another instance raised it first
            return False
        self.open[alert.key] = alert
        self.log.append(("raised", alert.key, at))
        return True

    async def resolve_alert(self, alert: Alert, at: float) -> bool:
        if self.open.pop(alert.key, None) is None:
            return False
        self.log.append(("resolved", alert.key, at))
        return True


async def test_evaluator_persists_and_delivers_each_change_once() -> None:
    clock = [1000.0]
    states = {"x": ("degraded", "HTTP 500")}
    delivered: list[dict[str, object]] = []

    async def observe() -> Observation:
        return Observation(now=clock[0], connectors=dict(states))

    async def sink(event: dict[str, object]) -> None:
        delivered.append(event)

    async def broken_sink(event: dict[str, object]) -> None:
        raise RuntimeError("webhook down")

    # An alert left open by the previous process is not raised a second time.
    store = FakeStore([Alert("outbox_age", "outbox", "critical", "old")])
    evaluator = AlertEvaluator(OPS, observe, store, [broken_sink, sink], clock=lambda: clock[0])
    raised, resolved = await evaluator.tick()
    assert [a.key for a in raised] == ["connector_degraded:x"]
    assert [a.key for a in resolved] == ["outbox_age:outbox"]
    await evaluator.tick()  # nothing changed
    clock[0] = 1015.0
    states["x"] = ("running", None)
    await evaluator.tick()
    assert store.log == [("raised", "connector_degraded:x", 1000.0),
                         ("resolved", "outbox_age:outbox", 1000.0),
                         ("resolved", "connector_degraded:x", 1015.0)]
    assert [(e["key"], e["state"]) for e in delivered] == [
        ("connector_degraded:x", "raised"), ("outbox_age:outbox", "resolved"),
        ("connector_degraded:x", "resolved")]

    # A second instance sees the same condition: the alert is open already, so it is not
    # delivered twice; and what the first instance resolved is not resolved again.
    states["x"] = ("failed", "token rejected")
    clock[0] = 1030.0
    await evaluator.tick()
    other = AlertEvaluator(OPS, observe, store, [sink], clock=lambda: clock[0])
    other._book = AlertBook()  # it started before the first instance raised the alert
    assert await other.tick() == ([], [])
    assert [e["key"] for e in delivered].count("connector_failed:x") == 1
