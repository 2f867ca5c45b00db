"""The baseline of ``bench/webhook_ingest.py``: an aiohttp app that reads the request body and
answers 200, nothing else (no signature check, no parsing, no storage).

Usage: ``python bench/_bare.py PORT`` (started by the bench scripts as a child process).
"""

from __future__ import annotations

import sys

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": 1})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application(client_max_size=30 * 1024 * 1024)
    app.router.add_post("/webhooks/whatsapp", receive)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
