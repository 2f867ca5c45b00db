"""The ``lapor-gateway`` command line: run, gateway, sink, export.

The only place that configures logging and prints. Every command takes ``--config FILE``; with
no file the embedded defaults apply (web form and API on 127.0.0.1:8080, embedded broker,
SQLite under ./data).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson
from aiohttp import web

from config.settings import Settings, load_settings
from config.sms import gammu_environment
from connectors.sms import run_gammu_receive
from errors import ConfigError, LaporError
from forwarder.db import open_database
from forwarder.store import CentralStore
from gateway import __version__
from gateway.app import Role, create_app

log = logging.getLogger("lapor_gateway")

ROLES = {
    "run": frozenset({Role.GATEWAY, Role.SINK}),
    "gateway": frozenset({Role.GATEWAY}),
    "sink": frozenset({Role.SINK}),
}
CSV_COLUMNS = (
    "id", "tracking_code", "status", "channel", "received_at", "classification", "category",
    "agency", "title", "body", "incident_date", "location", "region_code", "confidential",
    "anonymous", "reporter_name", "reporter_email", "reporter_phone", "attachments",
    "thread_of", "duplicate_of",
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML config file (environment LAPOR_<SECTION>__<KEY> overrides)")
    common.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    common.add_argument("--uvloop", action="store_true",
                        help="run on uvloop (pip install 'lapor-gateway[fast]'): faster "
                             "sockets and timers under heavy load")
    parser = argparse.ArgumentParser(
        prog="lapor-gateway", parents=[common],
        description="Every channel flows into SP4N-LAPOR!: the complaint intake gateway.",
    )
    parser.add_argument("--version", action="version", version=f"lapor-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common],
                        help="everything in one process (embedded broker by default)")
    commands.add_parser("gateway", parents=[common], help="HTTP intake, connectors, forwarder")
    commands.add_parser("sink", parents=[common], help="the central store's Kafka consumer")
    export = commands.add_parser("export", parents=[common],
                                 help="every complaint in the central store to standard output")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    status = commands.add_parser(
        "status", parents=[common],
        help="connector health of the running instance, as a table (uses gateway.ops_token)",
    )
    status.add_argument("--url", help="base URL of the instance (default: gateway.host:port)")
    receive = commands.add_parser(
        "sms-receive", parents=[common],
        help="Gammu SMSD RunOnReceive: post the received SMS to the gateway's generic webhook",
    )
    receive.add_argument("ids", nargs="*", help="message ids Gammu passes (file names)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        settings = load_settings(args.config)
        if args.command == "export":
            return asyncio.run(export(settings, args.format, sys.stdout))
        if args.command == "status":
            return asyncio.run(show_status(settings, args.url, sys.stdout))
        if args.command == "sms-receive":
            posted = asyncio.run(run_gammu_receive(settings.connectors.sms, gammu_environment(),
                                                   args.ids))
            log.info("sms-receive: %d message(s) handed to the gateway", posted)
            return 0
        return _run(serve(settings, ROLES[args.command]), use_uvloop=args.uvloop)
    except LaporError as exc:
        print(f"lapor-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(main: Coroutine[Any, Any, int], *, use_uvloop: bool) -> int:
    """Run ``main`` on asyncio's default loop, or on uvloop when asked (and installed)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop
        except ImportError as exc:
            raise ConfigError("--uvloop: uvloop is not installed "
                              "(pip install 'lapor-gateway[fast]')") from exc
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiokafka reports every failed reconnect at ERROR; our forwarder reports broker trouble.
    logging.getLogger("aiokafka").setLevel("DEBUG" if level == "DEBUG" else "CRITICAL")
    logging.getLogger("aiohttp.access").setLevel("WARNING")
    # httpx (python-telegram-bot's transport) logs every request URL, which holds the bot token.
    logging.getLogger("httpx").setLevel("WARNING")


async def serve(settings: Settings, roles: frozenset[Role]) -> int:
    """Run the app until SIGTERM/SIGINT, then shut down gracefully."""
    app = create_app(settings, roles)
    runner = web.AppRunner(app, handle_signals=False,
                           shutdown_timeout=settings.gateway.shutdown_grace_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.gateway.host, settings.gateway.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else settings.gateway.port
        log.info("lapor-gateway %s (%s) listening on http://%s:%s", __version__,
                 "+".join(sorted(roles)), settings.gateway.host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down: draining in-flight work")
    finally:
        await runner.cleanup()
    log.info("stopped")
    return 0


async def export(settings: Settings, fmt: str, out: TextIO) -> int:
    """Write every complaint in the central store, oldest first."""
    db = await open_database(settings.store_url(), pool_size=2)
    try:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        async for stored in CentralStore(db).iter_all():
            record = orjson.loads(stored.payload)
            record["tracking_code"] = stored.tracking_code
            record["status"] = stored.status
            if writer is not None:
                writer.writerow(_flatten(record))
            else:
                out.write(orjson.dumps(record).decode() + "\n")
    finally:
        await db.close()
    return 0


async def show_status(settings: Settings, url: str | None, out: TextIO) -> int:
    """Print the running instance's connectors (state, last success, last error, counters)."""
    if settings.gateway.ops_token is None:
        raise ConfigError("gateway.ops_token: set it (here and on the instance) to use status")
    host = settings.gateway.host if settings.gateway.host not in ("0.0.0.0", "::") \
        else "127.0.0.1"
    base = (url or f"http://{host}:{settings.gateway.port}").rstrip("/")
    headers = {"Authorization": f"Bearer {settings.gateway.ops_token.get_secret_value()}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
                session.get(f"{base}/ops/api/connectors", headers=headers) as response:
            if response.status != 200:
                raise LaporError(f"{base} answered {response.status}: {await response.text()}")
            data = await response.json()
    except aiohttp.ClientError as exc:
        raise LaporError(f"cannot reach {base}: {exc}") from exc
    rows = [("CONNECTOR", "STATE", "LAST SUCCESS", "ACCEPTED", "DUPLICATES", "REJECTED",
             "ERRORS", "LAST ERROR")]
    for c in data["connectors"]:
        counters = c["counters"]
        rows.append((c["name"], c["state"], _ago(c["last_success"]),
                     str(counters.get("accepted", 0)), str(counters.get("duplicates", 0)),
                     str(counters.get("rejected", 0)), str(counters.get("errors", 0)),
                     (c["last_error"] or "")[:60]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                    strict=True)).rstrip() + "\n")
    outbox = data["forwarder"].get("outbox")
    if outbox:
        out.write(f"\noutbox: {outbox['pending']} pending, oldest {outbox['oldest_s']:.1f}s\n")
    return 0


def _ago(moment: float | None) -> str:
    if moment is None:
        return "-"
    seconds = max(0, int(time.time() - moment))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def _flatten(record: dict[str, object]) -> dict[str, object]:
    reporter = record.get("reporter") or {}
    location = record.get("location") or {}
    attachments = record.get("attachments") or []
    assert isinstance(reporter, dict) and isinstance(location, dict)
    assert isinstance(attachments, list)
    row = {key: record.get(key) for key in CSV_COLUMNS}
    row.update({
        "location": location.get("text"),
        "region_code": location.get("region_code"),
        "anonymous": reporter.get("anonymous"),
        "reporter_name": reporter.get("name"),
        "reporter_email": reporter.get("email"),
        "reporter_phone": reporter.get("phone"),
        "attachments": " ".join(str(a.get("storage_ref")) for a in attachments),
    })
    return row


if __name__ == "__main__":
    sys.exit(main())
