"""The operators' dashboard at ``/ops``: server-rendered HTML, no build step, no JS library.

Channels as cards (state, sparkline, counters, backlog, pause/resume/restart), throughput per
channel over time, the forwarder's backlog, dead letters with replay, overdue complaints and
recent alerts; in Bahasa Indonesia or English (``?lang=en``, else ``Accept-Language``).
Charts are inline SVG computed here. Jinja2 autoescaping escapes every string, including what
citizens sent (dead-letter reasons, alert texts).

Access: the same ``gateway.ops_token``. ``/ops/login`` exchanges it for a signed session
cookie (HttpOnly, SameSite=Strict, path ``/ops``, 12 hours); every POST carries a CSRF token
bound to that session. ``static/ops.js`` (served from ``/ops/static/ops.js``, no inline
script) only reloads the page periodically.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from config.settings import GatewaySettings
from connectors.webform import Render
from gateway.ops import OVERDUE_LISTED, OpsService, bearer_ok
from gateway.ops_texts import TEXTS, language

COOKIE = "lapor_ops"
SESSION_MAX_AGE_S = 12 * 3600
DEAD_LETTERS_SHOWN = 50
REFRESH_S = 30  # the page reloads itself this often (``?refresh=0`` turns it off)
SPARK_W, SPARK_H = 120, 28
BAR_W, BAR_H = 360, 60


class Sessions:
    """Signed session cookies and the CSRF tokens bound to them."""

    def __init__(self, ops_token: bytes) -> None:
        self._key = hmac.new(ops_token, b"lapor-ops-session", hashlib.sha256).digest()

    def issue(self, now: float | None = None) -> str:
        body = f"{int(time.time() if now is None else now)}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign(body)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie:
            return False
        body, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(_bytes(signature), self._sign(body).encode()):
            return False
        issued = body.split(".", 1)[0]
        return issued.isdigit() and (time.time() if now is None else now) - int(issued) \
            < SESSION_MAX_AGE_S

    def csrf(self, cookie: str) -> str:
        return self._sign("csrf." + cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie and token) and hmac.compare_digest(
            _bytes(token or ""), self.csrf(cookie or "").encode())

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, _bytes(text), hashlib.sha256).hexdigest()[:40]


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def sparkline(series: Sequence[int], width: int = SPARK_W, height: int = SPARK_H) -> str:
    """The ``points`` of an SVG polyline for ``series`` (empty when fewer than two values)."""
    if len(series) < 2:
        return ""
    top = max(max(series), 1)
    step = width / (len(series) - 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}"
                    for i, v in enumerate(series))


def bars(series: Sequence[int], width: int = BAR_W, height: int = BAR_H
         ) -> list[dict[str, float]]:
    """SVG rectangles (x, y, w, h, value) for a bar chart of ``series``."""
    if not series:
        return []
    top = max(max(series), 1)
    w = width / len(series)
    return [{"x": round(i * w, 1), "w": round(max(w - 1, 0.5), 1),
             "h": round(v / top * (height - 2), 1), "y": round(height - v / top * (height - 2), 1),
             "v": v} for i, v in enumerate(series)]


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when_us(epoch_us: int | None) -> str:
    return _when(epoch_us / 1_000_000 if epoch_us is not None else None)


def dashboard_routes(settings: GatewaySettings, render: Render,
                     ops_of: Callable[[web.Application], OpsService]
                     ) -> list[web.AbstractRouteDef]:
    """``/ops`` (dashboard), ``/ops/login``, ``/ops/logout``, the POST actions, the JS."""
    token = settings.ops_token.get_secret_value().encode() if settings.ops_token else None
    sessions = Sessions(token) if token else None
    secure = (settings.public_url or "").startswith("https://")

    def page(request: web.Request, name: str, context: dict[str, Any],
             status: int = 200) -> web.Response:
        lang = language(request.query.get("lang"), request.headers.get("Accept-Language"))
        html = render(name, {**context, "t": TEXTS[lang], "lang": lang})
        response = web.Response(text=html, content_type="text/html", status=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    def lang_query(request: web.Request) -> str:
        lang = request.query.get("lang")
        return f"?lang={lang}" if lang in TEXTS else ""

    def authorised(request: web.Request) -> str | None:
        """The session cookie if the request may see the dashboard ("" for a bearer)."""
        if sessions is None or token is None:
            return None
        if bearer_ok(request, token):
            return ""
        cookie = request.cookies.get(COOKIE)
        return cookie if sessions.valid(cookie) else None

    async def login_form(request: web.Request) -> web.Response:
        if sessions is None:
            return page(request, "ops_login.html", {"disabled": True}, status=403)
        return page(request, "ops_login.html", {"disabled": False, "wrong": False})

    async def login(request: web.Request) -> web.StreamResponse:
        if sessions is None or token is None:
            return page(request, "ops_login.html", {"disabled": True}, status=403)
        form = await request.post()
        given = str(form.get("token", ""))
        if not given or not hmac.compare_digest(_bytes(given), token):
            return page(request, "ops_login.html", {"disabled": False, "wrong": True},
                        status=401)
        response = _see_other("/ops" + lang_query(request))
        response.set_cookie(COOKIE, sessions.issue(), max_age=SESSION_MAX_AGE_S, path="/ops",
                            httponly=True, samesite="Strict", secure=secure)
        return response

    async def logout(request: web.Request) -> web.StreamResponse:
        response = _see_other("/ops/login" + lang_query(request))
        response.del_cookie(COOKIE, path="/ops")
        return response

    async def dashboard(request: web.Request) -> web.StreamResponse:
        cookie = authorised(request)
        if cookie is None:
            if sessions is None:
                return page(request, "ops_login.html", {"disabled": True}, status=403)
            raise web.HTTPSeeOther("/ops/login" + lang_query(request))
        ops = ops_of(request.app)
        overview = await ops.overview()
        for card in overview["connectors"]:
            card["spark"] = sparkline(card["series"])
            card["bars"] = bars(card["series"])
            card["last_success_text"] = _when(card["last_success"])
            card["last_error_text"] = _when(card["last_error_at"])
        letters = await ops.outbox.dead_letters(DEAD_LETTERS_SHOWN)
        for letter in letters:
            letter["created_text"] = _when_us(letter["created_us"])  # type: ignore[arg-type]
            letter["replayed_text"] = _when_us(letter["replayed_us"])  # type: ignore[arg-type]
        alerts = await ops.store.recent_alerts()
        for alert in alerts:
            alert["raised_text"] = _when_us(alert["raised_us"])  # type: ignore[arg-type]
            alert["resolved_text"] = _when_us(alert["resolved_us"])  # type: ignore[arg-type]
        try:
            refresh = max(0, min(int(request.query.get("refresh", REFRESH_S)), 3600))
        except ValueError:
            refresh = REFRESH_S
        return page(request, "ops.html", {
            "overview": overview, "connectors": overview["connectors"],
            "forwarder": overview["forwarder"], "dead_letters": letters, "alerts": alerts,
            "overdue": list(await ops.overdue_source(OVERDUE_LISTED)),
            "csrf": sessions.csrf(cookie) if sessions and cookie else "",
            "done": request.query.get("done", ""), "subject": request.query.get("subject", ""),
            "refresh": refresh, "spark_w": SPARK_W, "spark_h": SPARK_H, "bar_w": BAR_W,
            "bar_h": BAR_H, "now": _when(time.time()),
        })

    async def checked_post(request: web.Request) -> tuple[OpsService, str] | web.Response:
        cookie = request.cookies.get(COOKIE)
        if sessions is None or not sessions.valid(cookie):
            return page(request, "ops_login.html", {"disabled": sessions is None,
                                                    "wrong": False}, status=403)
        form = await request.post()
        if not sessions.csrf_ok(cookie, str(form.get("csrf_token", ""))):
            raise web.HTTPForbidden(text="CSRF token missing or wrong; reload /ops")
        return ops_of(request.app), str(form.get("lang", ""))

    def back(lang: str, done: str, subject: str) -> web.HTTPSeeOther:
        query = {"done": done, "subject": subject[:80]}
        if lang in TEXTS:
            query["lang"] = lang
        return web.HTTPSeeOther("/ops?" + urlencode(query))

    async def control(request: web.Request) -> web.StreamResponse:
        checked = await checked_post(request)
        if isinstance(checked, web.Response):
            return checked
        ops, lang = checked
        name, action = request.match_info["name"], request.match_info["action"]
        connector = ops.find(name)
        if connector is None:
            raise web.HTTPNotFound(text="no such connector")
        await ops.control(connector, action)
        raise back(lang, action, name)

    async def replay(request: web.Request) -> web.StreamResponse:
        checked = await checked_post(request)
        if isinstance(checked, web.Response):
            return checked
        ops, lang = checked
        letter_id = request.match_info["id"][:64]
        entry = await ops.replay(letter_id)
        if entry is None:
            raise web.HTTPNotFound(text="no such dead letter")
        outcome = str(entry.get("replay_result") or "")
        raise back(lang, "replay_failed" if outcome.startswith("failed") else "replayed",
                   letter_id)

    async def script(request: web.Request) -> web.Response:
        body = resources.files("gateway").joinpath("static", "ops.js").read_bytes()
        return web.Response(body=body, content_type="text/javascript",
                            headers={"Cache-Control": "max-age=300"})

    return [
        web.get("/ops", dashboard),
        web.get("/ops/login", login_form),
        web.post("/ops/login", login),
        web.post("/ops/logout", logout),
        web.post("/ops/connectors/{name}/{action:pause|resume|restart}", control),
        web.post("/ops/dead-letters/{id}/replay", replay),
        web.get("/ops/static/ops.js", script),
    ]


def _see_other(location: str) -> web.Response:
    """A 303 to ``location`` that can carry cookies (aiohttp deprecates *returning* an
    ``HTTPSeeOther``: with warnings as errors the request failed)."""
    return web.Response(status=303, headers={"Location": location})
