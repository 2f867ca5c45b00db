"""Security headers on every response, errors and aiohttp's own answers (404, 413) included;
and the body limit enforced from ``Content-Length`` before anything reads the body.

The pages use no script and no third-party resource, so the content security policy is tight:
everything from our own origin, inline styles only (the templates' ``<style>``), no framing,
forms post only to us. HSTS is sent when the public URL is HTTPS (then every visit must be).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: The ops dashboard's pages load their one script from our origin (``/ops/static/ops.js``,
#: the auto-refresh); still no inline script, so injected markup cannot run.
OPS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("script-src 'none'",
                                                              "script-src 'self'")
HSTS = "max-age=31536000; includeSubDomains"  # one year, as HSTS preload lists expect


def security_headers(public_url: str | None) -> Mapping[str, str]:
    """The headers every response carries."""
    headers = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    }
    if (public_url or "").startswith("https://"):
        headers["Strict-Transport-Security"] = HSTS
    return headers


def security_headers_middleware(
    public_url: str | None,
) -> Middleware:
    """A middleware adding :func:`security_headers` (a handler's own values win)."""
    headers = security_headers(public_url)

    def add(response: web.StreamResponse) -> None:
        for name, value in headers.items():
            response.headers.setdefault(name, value)

    @web.middleware
    async def secure(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # 404, 405, 413 and friends raised, not returned
            add(exc)
            raise
        add(response)
        return response

    return secure


def body_limit_middleware(max_bytes: int) -> Middleware:
    """413 at once when ``Content-Length`` announces more than ``max_bytes``: the body is never
    read (aiohttp's own ``client_max_size`` check only fires after reading up to the limit,
    and a handler that waits for a body the client never sends would hang). Chunked bodies
    without a length are still cut at ``client_max_size`` while they are read."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=length)
        return await handler(request)

    return limit
