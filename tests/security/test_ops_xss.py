"""Citizen- and payload-provided strings on the ops dashboard: a dead letter's reason, channel
and replay outcome, a connector's last error, an alert message, an overdue complaint's agency
and the flash line a replay redirects to are all escaped, and the page carries a CSP that
forbids inline script."""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

from gateway.alerts import Alert
from gateway.app import CONNECTORS, OPS, OUTBOX
from tests.security.conftest import OPS_TOKEN, Gateway

SCRIPT = '<script>document.title="pwned"</script>'
IMG = '"><img src=x onerror=alert(1)>'
EVIL = SCRIPT + IMG
#: What autoescaping makes of EVIL: every markup character is an entity.
ESCAPED = ("&lt;script&gt;document.title=&#34;pwned&#34;&lt;/script&gt;"
           "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;")
OWN_SCRIPT = '<script src="/ops/static/ops.js"></script>'


async def sign_in(gw: Gateway) -> dict[str, str]:
    """The session cookie, as a header: it is ``Secure`` (the public URL is https), so the
    test client on plain loopback HTTP would not send it by itself."""
    async with gw.client.post("/ops/login", data={"token": OPS_TOKEN},
                              allow_redirects=False) as response:
        assert response.status == 303
        [(name, morsel)] = response.cookies.items()
        assert morsel["secure"] and morsel["httponly"]
        return {"Cookie": f"{name}={morsel.value}"}


async def dashboard(gw: Gateway, session: dict[str, str], query: str = "") -> tuple[str, str]:
    async with gw.client.get(f"/ops?lang=en&refresh=0{query}", headers=session) as response:
        assert response.status == 200
        return await response.text(), response.headers["Content-Security-Policy"]


async def seed_hostile_strings(gw: Gateway) -> str:
    """Every dashboard field a citizen or a payload can fill, filled with EVIL; the id of a
    dead letter on a channel named EVIL (its replay fails and repeats the channel name)."""
    app = gw.client.app
    outbox = app[OUTBOX]
    await outbox.dead_letter("whatsapp", "1065", f"rejected: {EVIL}",
                             f'{{"text": "{EVIL}"}}'.encode(), "application/json")
    letter = await outbox.dead_letter(EVIL, "acct", "unknown channel", EVIL.encode(),
                                      "application/json")
    whatsapp = next(c for c in app[CONNECTORS] if c.name == "whatsapp")
    whatsapp.record_error(f"ChannelRejected: {EVIL}")
    await app[OPS].store.raise_alert(Alert("silent_channel", "sms", "warning",
                                           f"no SMS since {EVIL}"), time.time())
    received = "2026-01-05T01:00:00.000000Z"
    await gw.rows(
        "INSERT INTO complaints (id, tracking_code, channel, account, native_id, received_at,"
        " stored_us, classification, agency, region_code, payload, verify_due, settle_due)"
        " VALUES ('x1', 'AAAAA-BBBBB', 'webform', 'web', 'n1', $1, 1, 'pengaduan', $2,"
        " '64.72', '{}', '2026-01-08T16:00:00.000000Z', '2026-03-06T16:00:00.000000Z')"
        " RETURNING id", received, EVIL)
    return str(letter)


def assert_no_injected_markup(html: str, expected_escaped: int) -> None:
    assert SCRIPT not in html and IMG not in html and "<img" not in html
    assert not re.search(r"<[^>]*\sonerror\s*=", html, re.IGNORECASE)
    assert "<script" not in html.replace(OWN_SCRIPT, "")
    assert html.count(ESCAPED) >= expected_escaped, html


async def test_hostile_strings_on_the_dashboard_are_escaped_under_a_strict_csp(
        gw: Gateway) -> None:
    letter = await seed_hostile_strings(gw)
    session = await sign_in(gw)
    html, csp = await dashboard(gw, session)
    # The dead letter's reason and channel, the connector's last error, the alert message,
    # the overdue complaint's agency.
    assert 'id="overdue"' in html and "AAAAA-BBBBB" in html
    assert_no_injected_markup(html, expected_escaped=5)
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"]  # ops.js from our origin; nothing inline
    assert directives["object-src"] == ["'none'"] and directives["base-uri"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in directives["script-src"]

    # Replaying the letter fails and says why, naming the channel: the table shows that as
    # the replay result. The flash line repeats the redirect's ``subject`` (here forged).
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert csrf is not None
    async with gw.client.post(f"/ops/dead-letters/{letter}/replay", allow_redirects=False,
                              headers=session,
                              data={"csrf_token": csrf.group(1), "lang": "en"}) as response:
        assert response.status == 303
        location = response.headers["Location"]
    assert "done=replay_failed" in location
    forged = urlencode({"done": "replay_failed", "subject": EVIL})
    html, _ = await dashboard(gw, session, "&" + forged)
    assert 'id="flash"' in html
    assert_no_injected_markup(html, expected_escaped=7)  # + the flash and the replay result
