"""The ``lapor-gateway`` command line: run, gateway, sink, export, status, dlq, report.

The only place that configures logging and prints. Every command takes ``--config FILE``; with
no file the embedded defaults apply (web form and API on 127.0.0.1:8080, embedded broker,
SQLite under ./data).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
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
from forwarder.erasure import erase
from forwarder.store import CentralStore
from gateway import __version__
from gateway.app import Role, create_app
from gateway.heap import HeapTrimmer
from gateway.logging_json import setup_logging
from gateway.report import (
    ReportRow,
    lifecycle_answers,
    read_rows,
    summarise,
    write_chart,
    write_csv,
)
from normalizer.ids import parse_tracking_code

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
    "thread_of", "duplicate_of", "cluster_id",
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
    dlq = commands.add_parser(
        "dlq", parents=[common],
        help="dead letters of the running instance: list, or replay after a fix")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", parents=[common], help="newest first")
    dlq_list.add_argument("--limit", type=int, default=50)
    dlq_replay = dlq_commands.add_parser("replay", parents=[common],
                                         help="send dead letters through again")
    dlq_replay.add_argument("ids", nargs="+", metavar="ID")
    for sub in (dlq_list, dlq_replay):
        sub.add_argument("--url", help="base URL of the instance (default: gateway.host:port)")
    report = commands.add_parser(
        "report", parents=[common],
        help="the annual complaint report: counts, response times, SLA compliance")
    report.add_argument("--year", type=int, required=True)
    report.add_argument("--by", choices=["agency", "channel", "region"], default="agency")
    report.add_argument("--out", type=Path, metavar="FILE.csv",
                        help="CSV file (default: standard output)")
    report.add_argument("--chart", type=Path, metavar="FILE.png", help="PNG bar chart")
    receive = commands.add_parser(
        "sms-receive", parents=[common],
        help="Gammu SMSD RunOnReceive: post the received SMS to the gateway's generic webhook",
    )
    receive.add_argument("ids", nargs="*", help="message ids Gammu passes (file names)")
    erase = commands.add_parser(
        "erase", parents=[common],
        help="erase a reporter's personal data (UU PDP), keeping an anonymised record",
    )
    erase.add_argument("codes", nargs="+", metavar="KODE", help="tracking codes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        settings = load_settings(args.config)
        if args.command == "export":
            return asyncio.run(export(settings, args.format, sys.stdout))
        if args.command == "status":
            return asyncio.run(show_status(settings, args.url, sys.stdout))
        if args.command == "erase":
            return asyncio.run(erase_personal_data(settings, args.codes, sys.stdout))
        if args.command == "dlq":
            return asyncio.run(dead_letters(settings, args, sys.stdout))
        if args.command == "report":
            rows = asyncio.run(report_rows(settings, args.year, args.by))
            return annual_report(rows, args.year, args.by, args.out, args.chart)
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


def freeze_startup_objects() -> None:
    """Move what startup built (rules, gazetteer, schemas, libraries' modules: the bulk of the
    heap, kept for the process's life) out of the cyclic garbage collector's sight
    (:func:`gc.freeze`). Every full collection used to walk all of it: about 100 ms, every few
    seconds under load, which was the p99 of webhook answers."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings, roles: frozenset[Role]) -> int:
    """Run the app until SIGTERM/SIGINT, then shut down gracefully."""
    app = create_app(settings, roles)
    runner = web.AppRunner(app, handle_signals=False,
                           shutdown_timeout=settings.gateway.shutdown_grace_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.gateway.host, settings.gateway.port)
        await site.start()
        freeze_startup_objects()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else settings.gateway.port
        log.info("lapor-gateway %s (%s) listening on http://%s:%s", __version__,
                 "+".join(sorted(roles)), settings.gateway.host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with HeapTrimmer(settings.gateway.heap_trim_s):
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


async def ops_api(settings: Settings, url: str | None, method: str, path: str) -> Any:
    """Call the running instance's ops API (``gateway.ops_token``) and return its JSON."""
    if settings.gateway.ops_token is None:
        raise ConfigError("gateway.ops_token: set it (here and on the instance) to use this")
    host = settings.gateway.host if settings.gateway.host not in ("0.0.0.0", "::") \
        else "127.0.0.1"
    base = (url or f"http://{host}:{settings.gateway.port}").rstrip("/")
    headers = {"Authorization": f"Bearer {settings.gateway.ops_token.get_secret_value()}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, \
                session.request(method, f"{base}{path}", headers=headers) as response:
            if response.status != 200:
                raise LaporError(f"{base} answered {response.status}: {await response.text()}")
            return await response.json()
    except aiohttp.ClientError as exc:
        raise LaporError(f"cannot reach {base}: {exc}") from exc


def write_table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                    strict=True)).rstrip() + "\n")


async def show_status(settings: Settings, url: str | None, out: TextIO) -> int:
    """Print the running instance's connectors (state, last success, last error, counters)."""
    data = await ops_api(settings, url, "GET", "/ops/api/connectors")
    rows = [("CONNECTOR", "STATE", "LAST SUCCESS", "ACCEPTED", "DUPLICATES", "REJECTED",
             "ERRORS", "MSG/MIN", "BACKLOG", "LAST ERROR")]
    for c in data["connectors"]:
        counters = c["counters"]
        rows.append((c["name"], c["state"], _ago(c["last_success"]),
                     str(counters.get("accepted", 0)), str(counters.get("duplicates", 0)),
                     str(counters.get("rejected", 0)), str(counters.get("errors", 0)),
                     f"{c.get('throughput_per_min', 0):.1f}", str(c.get("backlog", 0)),
                     (c["last_error"] or "")[:60]))
    write_table(rows, out)
    outbox = data["forwarder"].get("outbox")
    if outbox:
        out.write(f"\noutbox: {outbox['pending']} pending, oldest {outbox['oldest_s']:.1f}s\n")
    alerts = await ops_api(settings, url, "GET", "/ops/api/alerts")
    open_alerts = [a for a in alerts["alerts"] if a["resolved_us"] is None]
    out.write(f"alerts: {len(open_alerts)} open\n")
    for alert in open_alerts:
        out.write(f"  {alert['severity'].upper():8} {_one_line(alert['message'], 100)}\n")
    return 0


async def dead_letters(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """``dlq list``: a table of dead letters; ``dlq replay ID…``: replay each, print results."""
    if args.dlq_command == "list":
        data = await ops_api(settings, args.url, "GET",
                             f"/ops/api/dead-letters?limit={max(1, args.limit)}")
        rows = [("ID", "CREATED", "CHANNEL", "SOURCE", "SIZE", "REASON", "REPLAY")]
        for d in data["dead_letters"]:
            rows.append((d["id"], _ago(d["created_us"] / 1_000_000), d["channel"],
                         d.get("source") or "connector", str(d["size"]),
                         _one_line(d["reason"], 50), _one_line(d.get("replay_result"), 40)))
        write_table(rows, out)
        return 0
    failed = 0
    for letter_id in args.ids:
        entry = await ops_api(settings, args.url, "POST",
                              f"/ops/api/dead-letters/{letter_id}/replay")
        result = str(entry.get("replay_result") or "")
        failed += result.startswith("failed")
        out.write(f"{letter_id}  {result}\n")
    return 1 if failed else 0


def _one_line(text: str | None, width: int) -> str:
    return " ".join((text or "").split())[:width]


async def report_rows(settings: Settings, year: int, by: str) -> list[ReportRow]:
    """The central store's complaints of ``year`` for the report (progress on stderr)."""
    db = await open_database(settings.store_url(), pool_size=2)
    try:
        return await read_rows(db, year, by, await lifecycle_answers(db))
    finally:
        await db.close()


def annual_report(rows: list[ReportRow], year: int, by: str, out_path: Path | None,
                  chart: Path | None) -> int:
    """``report``: the CSV (to ``out_path`` or standard output) and optionally the chart."""
    stats = summarise(rows, now=datetime.now(UTC))
    if out_path is not None:
        with open(out_path, "w", newline="", encoding="utf-8") as fh:
            write_csv(stats, fh)
    else:
        write_csv(stats, sys.stdout)
    if chart is not None:
        write_chart(stats, chart, year=year, by=by)
    log.info("report %d by %s: %d complaints in %d groups", year, by, len(rows), len(stats))
    return 0


async def erase_personal_data(settings: Settings, codes: Sequence[str], out: TextIO) -> int:
    """``erase KODE...``: 0 when every code was found and erased, 1 otherwise."""
    db = await open_database(settings.store_url(), pool_size=2)
    missing = 0
    try:
        for typed in codes:
            code = parse_tracking_code(typed)
            erased = await erase(db, code, settings.gateway.data_dir / "attachments") \
                if code else None
            if erased is None:
                out.write(f"{typed}: no complaint with this tracking code\n")
                missing += 1
            else:
                out.write(f"{code}: personal data erased ({len(erased.complaint_ids)} "
                          f"record(s), {erased.files_deleted} file(s) deleted)\n")
    finally:
        await db.close()
    return 1 if missing else 0


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
