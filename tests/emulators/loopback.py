"""Serving an emulator's aiohttp app on a free loopback port (shared by every emulator)."""

from __future__ import annotations

import ssl

from aiohttp import web


async def serve_loopback(app: web.Application, *, ssl_context: ssl.SSLContext | None = None,
                         shutdown_timeout: float = 60.0) -> tuple[web.AppRunner, int]:
    """Start ``app`` on 127.0.0.1 at a free port; return its runner (to clean up) and port."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    return runner, int(runner.addresses[0][1])
