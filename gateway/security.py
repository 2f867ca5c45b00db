"""Security headers on every response, errors and aiohttp's own answers (404, 413) included.

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
