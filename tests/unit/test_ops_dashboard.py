"""The dashboard's pieces: sessions and CSRF tokens, language choice, charts, escaping."""

from __future__ import annotations

from gateway.app import _renderer
from gateway.ops_dashboard import SESSION_MAX_AGE_S, Sessions, bars, sparkline
from gateway.ops_store import Throughput
from gateway.ops_texts import TEXTS, language


def test_sessions_are_signed_expire_and_bind_csrf_tokens() -> None:
    sessions = Sessions(b"token-a")
    cookie = sessions.issue(now=1000)
    assert sessions.valid(cookie, now=1001)
    assert not sessions.valid(cookie, now=1000 + SESSION_MAX_AGE_S + 1)
    assert not Sessions(b"token-b").valid(cookie, now=1001)  # a rotated token ends sessions
    assert not sessions.valid(cookie[:-1] + ("0" if cookie[-1] != "0" else "1"), now=1001)
    assert not sessions.valid("\udcff.1.x", now=1001)  # undecodable cookie bytes: refused
    token = sessions.csrf(cookie)
    assert sessions.csrf_ok(cookie, token)
    assert not sessions.csrf_ok(sessions.issue(now=1000), token)  # another session's token
    assert not sessions.csrf_ok(cookie, "")
    assert not sessions.csrf_ok(None, token)


def test_language_from_query_then_accept_language() -> None:
    assert language("en", "id") == "en"
    assert language(None, "en-GB,en;q=0.8") == "en"
    assert language("fr", "fr-FR, en;q=0.5") == "en"
    assert language(None, None) == "id"
    assert set(TEXTS["id"]) == set(TEXTS["en"])  # every text in both languages


def test_charts_scale_to_the_largest_value() -> None:
    assert sparkline([5]) == ""
    points = [tuple(map(float, p.split(","))) for p in sparkline([0, 10, 5], 100, 24).split()]
    assert [x for x, _ in points] == [0.0, 50.0, 100.0]
    assert points[1][1] == 2.0 and points[0][1] == 22.0  # highest at the top, zero at bottom
    rects = bars([0, 4, 2], 30, 12)
    assert [r["v"] for r in rects] == [0, 4, 2]
    assert rects[1]["h"] == 10.0 and rects[2]["h"] == 5.0 and rects[0]["h"] == 0.0


def test_throughput_series_and_rate() -> None:
    ring = Throughput(kept=3)
    for at, received in [(0, 0), (60, 6), (120, 6), (180, 18)]:
        ring.sample("sms", received, at=at)
    assert ring.series("sms") == [0, 12]  # the oldest sample fell out of the ring
    assert ring.rate_per_min("sms") == 6.0  # 12 messages over two minutes
    assert ring.series("sms", live=20) == [0, 12, 2]
    assert ring.series("email") == [] and ring.rate_per_min("email") == 0.0


def test_citizen_text_in_the_dashboard_is_escaped() -> None:
    render = _renderer()
    evil = '<script>alert("x")</script>'
    html = render("ops.html", {
        "t": TEXTS["en"], "lang": "en", "connectors": [], "forwarder": {}, "overdue": [],
        "dead_letters": [{"id": "d1", "channel": "sms", "reason": evil, "size": 3,
                          "created_text": "-", "replay_result": None}],
        "alerts": [{"kind": "silent_channel", "severity": "warning", "message": evil,
                    "raised_text": "-", "resolved_us": None}],
        "done": "replayed", "subject": evil, "csrf": "c", "refresh": 0,
    })
    assert evil not in html
    assert html.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 3
    assert "<script" not in html.replace('<script src="/ops/static/ops.js"></script>', "")
