"""The baseline of ``bench/webhook_ingest.py``: an aiohttp app that reads the request body and
answers 200, nothing else (no signature check, no parsing, no storage).

A second instance stands in for the Graph API the gateway sends its acknowledgements to
(``POST /{version}/{phone-number-id}/messages`` answers like Graph: a message id), so replies
succeed as they would in production instead of retrying against a closed port.

Usage: ``python bench/_bare.py PORT`` (started by the bench scripts as a child process).
"""

from __future__ import annotations

import sys

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": 1})


async def graph_send(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"messaging_product": "whatsapp",
                              "messages": [{"id": "wamid.bench-reply"}]})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application(client_max_size=30 * 1024 * 1024)
    app.router.add_post("/webhooks/whatsapp", receive)
    app.router.add_post("/{version}/{number}/messages", graph_send)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
