"""Faults injected for real under steady mixed-channel traffic; the store audited after each.

One test per scenario, each bounded in time; each records its row of ``docs/RELIABILITY.md``
(see ``conftest.py``) before asserting, so a failure is published too. The helpers of
``tests/integration`` (``GatewayProcess``, ``BrokerProcess``, ``PgDatabase``, ``wait_for``)
do the process work; ``traffic.py`` sends and audits.

Scenario (4) adds the email channel: mail appended to a real Dovecot's INBOX, which is
killed (SIGKILL, every process) mid-stream and started again.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from imapclient import IMAPClient

from tests.emulators.dovecot import DovecotServer
from tests.emulators.graph import EmulatedGraph
from tests.emulators.telegram import TelegramEmulator
from tests.faults.conftest import Report
from tests.faults.pgserver import PrivatePostgres
from tests.faults.traffic import (
    API_KEY,
    CHANNELS,
    MAIL_PASSWORD,
    MAIL_USER,
    Audit,
    Traffic,
    elapsed,
    gateway_env,
    payload_rows,
)
from tests.integration.support import (
    BrokerProcess,
    GatewayProcess,
    PgDatabase,
    kafka_env_for,
    readyz,
    wait_for,
)

Fetch = Callable[[], Awaitable[list[str]]]
SCENARIO_TIMEOUT = 120  # seconds: the hard bound pytest enforces on each scenario
SETTLE_S = 60  # seconds to let the gateway deliver everything after the fault


def pg_payloads(pg: PgDatabase) -> Fetch:
    async def fetch() -> list[str]:
        return payload_rows(await pg.fetch("SELECT payload FROM complaints"))
    return fetch


async def acked_at_least(traffic: Traffic, count: int, within: float = 30) -> None:
    async def enough() -> bool:
        return len(traffic.acknowledged()) >= count
    await wait_for(enough, within=within, what=f"{count} acknowledged complaints")


async def settle(traffic: Traffic, fetch: Fetch, within: float = SETTLE_S) -> Audit:
    """The channels redeliver what was refused; then wait until every acknowledged complaint
    is stored (or the deadline) and audit."""
    redelivered = await traffic.redeliver()

    async def complete() -> Audit | None:
        if traffic.telegram is not None and traffic.telegram.updates:
            return None  # Telegram still holds unconfirmed updates
        audit = Audit.of(traffic, await fetch(), redelivered)
        return audit if audit.stored_once == audit.acknowledged else None

    try:
        return await wait_for(complete, within=within, what="every acknowledged complaint stored")
    except AssertionError:
        return Audit.of(traffic, await fetch(), redelivered)


async def stop(process: GatewayProcess) -> int:
    """SIGTERM and wait, off the event loop: the emulators in this process must keep answering
    the gateway's last calls while it drains."""
    return await asyncio.to_thread(process.terminate)


@asynccontextmanager
async def serving(process: GatewayProcess) -> AsyncIterator[GatewayProcess]:
    """Start ``process``; at the end it must stop cleanly on SIGTERM."""
    await process.start()
    try:
        yield process
    finally:
        assert await stop(process) == 0, process.log()


class Holder:
    """The gateway currently running (a restart replaces it); traffic follows its URL."""

    def __init__(self, process: GatewayProcess) -> None:
        self.process = process

    def url(self) -> str:
        return self.process.url


@asynccontextmanager
async def running(traffic: Traffic) -> AsyncIterator[Traffic]:
    await traffic.start()
    try:
        yield traffic
    finally:
        await traffic.stop()


def refusals(traffic: Traffic) -> str:
    statuses = traffic.statuses()
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
    return f"HTTP answers {{{shown}}}"


def assert_no_server_errors(traffic: Traffic) -> None:
    """A fault is answered 503 + Retry-After (or not at all while the process is down)."""
    answers = [(i.channel, status, retry) for i in traffic.sent for status, retry in i.answers]
    bad = [(c, s) for c, s, _ in answers if s is not None and s >= 500 and s != 503]
    assert not bad, bad
    missing = [c for c, s, retry in answers if s == 503 and not retry]
    assert not missing, f"503 without Retry-After on {missing}"


# --------------------------------------------------------------------------- scenarios


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_1_gateway_kill9_mid_stream(tmp_path: Path, pg: PgDatabase, broker: BrokerProcess,
                                          telegram: TelegramEmulator, report: Report) -> None:
    started = time.monotonic()
    env = {**kafka_env_for(broker.bootstrap, receipt_timeout_s=5), "LAPOR_STORE__URL": pg.url,
           **gateway_env(telegram=telegram)}
    gateway = Holder(GatewayProcess(tmp_path / "gw", env))
    await gateway.process.start()
    async with running(Traffic(gateway.url, telegram)) as traffic:
        await acked_at_least(traffic, 60)
        gateway.process.kill9()
        gateway.process = GatewayProcess(tmp_path / "gw", env)
        await gateway.process.start()
        await acked_at_least(traffic, len(traffic.acknowledged()) + 60)
    try:
        audit = await settle(traffic, pg_payloads(pg))
    finally:
        assert await stop(gateway.process) == 0, gateway.process.log()
    report.record("1. gateway kill -9 mid-stream, restart", audit, elapsed(started),
                  refusals(traffic))
    assert audit.ok, audit
    assert_no_server_errors(traffic)


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_2_broker_killed_losing_its_log(tmp_path: Path, pg: PgDatabase,
                                              telegram: TelegramEmulator,
                                              report: Report) -> None:
    """The embedded broker (the gateway's child) is killed; its log, topics and offsets go."""
    started = time.monotonic()
    env = {"LAPOR_STORE__URL": pg.url, "LAPOR_KAFKA__RECEIPT_TIMEOUT_S": "5",
           **gateway_env(telegram=telegram)}
    async with serving(GatewayProcess(tmp_path / "gw", env)) as gateway:
        async with running(Traffic(lambda: gateway.url, telegram)) as traffic:
            await acked_at_least(traffic, 60)
            broker_pid = (await readyz(gateway.url))["embedded_broker"]["pid"]
            os.kill(broker_pid, signal.SIGKILL)

            async def replaced() -> bool:
                broker = (await readyz(gateway.url))["embedded_broker"]
                return broker["restarts"] >= 1 and broker["pid"] != broker_pid

            await wait_for(replaced, within=30, what="the broker restarted by the gateway")
            await acked_at_least(traffic, len(traffic.acknowledged()) + 60)
        audit = await settle(traffic, pg_payloads(pg))
        state = await readyz(gateway.url)  # the forwarder's view, for a failure's message
    report.record("2. broker killed (log lost), restarted", audit, elapsed(started),
                  refusals(traffic))
    assert audit.ok, (audit, state)
    assert_no_server_errors(traffic)


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_3_postgresql_crash_restart(tmp_path: Path, pg: PgDatabase, broker: BrokerProcess,
                                          private_pg: PrivatePostgres,
                                          telegram: TelegramEmulator, report: Report) -> None:
    """The PostgreSQL holding the outbox and the central store stops without a checkpoint
    (every connection dies, recovery on start) and comes back."""
    started = time.monotonic()
    env = {**kafka_env_for(broker.bootstrap, receipt_timeout_s=5), "LAPOR_STORE__URL": pg.url,
           **gateway_env(telegram=telegram)}
    async with serving(GatewayProcess(tmp_path / "gw", env)) as gateway:
        async with running(Traffic(lambda: gateway.url, telegram)) as traffic:
            await acked_at_least(traffic, 60)
            before = len(traffic.sent)
            await asyncio.to_thread(private_pg.crash_restart)
            during = len(traffic.sent) - before
            await acked_at_least(traffic, len(traffic.acknowledged()) + 60, within=45)
        audit = await settle(traffic, pg_payloads(pg))
    report.record("3. PostgreSQL crash (immediate stop), restart", audit, elapsed(started),
                  f"{during} sent during the outage; {refusals(traffic)}")
    assert audit.ok, audit
    assert_no_server_errors(traffic)


def mailbox_flags(server: DovecotServer) -> list[tuple[bytes, ...]]:
    """The flags of every message in the INBOX (read-only: nothing changes)."""
    client = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=10)
    try:
        client.login(MAIL_USER, MAIL_PASSWORD)
        client.select_folder("INBOX", readonly=True)
        return [tuple(data[b"FLAGS"]) for data in client.fetch("1:*", ["FLAGS"]).values()]
    finally:
        client.logout()


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_4_dovecot_kill9_mid_stream(tmp_path: Path, pg: PgDatabase, broker: BrokerProcess,
                                          telegram: TelegramEmulator, mailbox: DovecotServer,
                                          report: Report) -> None:
    """Dovecot (master and every child) is killed while mail arrives and the connector is
    fetching and flagging; mail is refused while it is down; it starts again on the same
    Maildir. Every message the mailbox took is stored once and ends up flagged."""
    started = time.monotonic()
    env = {**kafka_env_for(broker.bootstrap, receipt_timeout_s=5), "LAPOR_STORE__URL": pg.url,
           **gateway_env(telegram=telegram, mailbox=mailbox)}
    async with serving(GatewayProcess(tmp_path / "gw", env)) as gateway:
        async with running(Traffic(lambda: gateway.url, telegram, mailbox,
                                   channels=(*CHANNELS, "email"))) as traffic:
            await acked_at_least(traffic, 60)
            await asyncio.to_thread(mailbox.kill)
            down = time.monotonic()
            refused_before = traffic.appends()["refused"]

            async def refusing() -> bool:
                return traffic.appends()["refused"] >= refused_before + 10

            await wait_for(refusing, within=15, what="mail refused while Dovecot is down")
            await asyncio.to_thread(mailbox.start)
            outage = elapsed(down)
            await acked_at_least(traffic, len(traffic.acknowledged()) + 60)
        audit = await settle(traffic, pg_payloads(pg))
        in_mailbox = await asyncio.to_thread(mailbox_flags, mailbox)

        async def all_flagged() -> bool:
            nonlocal in_mailbox
            in_mailbox = await asyncio.to_thread(mailbox_flags, mailbox)
            return all(b"\\Seen" in f and b"LaporDiterima" in f for f in in_mailbox)

        await wait_for(all_flagged, within=30, what="every message in the INBOX flagged")
    emails = sum(1 for i in traffic.sent if i.channel == "email")
    appends = traffic.appends()
    report.record("4. Dovecot kill -9 mid-stream, restart", audit, elapsed(started),
                  f"{emails} emails, {len(in_mailbox)} messages in the INBOX, all flagged; "
                  f"Dovecot down {outage}s; APPEND ok {appends['ok']}, refused "
                  f"{appends['refused']}; {refusals(traffic)}")
    assert audit.ok, audit
    assert appends["refused"] >= 10 and emails >= 20
    assert_no_server_errors(traffic)


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_5_channel_apis_answer_429_and_5xx(tmp_path: Path, pg: PgDatabase,
                                                 broker: BrokerProcess,
                                                 telegram: TelegramEmulator,
                                                 report: Report) -> None:
    """Telegram's getUpdates and sendMessage and the Graph API's send answer 429 (with
    retry_after / Retry-After) and 502/500 for a while: intake keeps going, polling resumes
    where it was, acknowledgements to citizens go out once the APIs recover."""
    started = time.monotonic()
    async with EmulatedGraph() as graph:
        env = {**kafka_env_for(broker.bootstrap, receipt_timeout_s=5), "LAPOR_STORE__URL": pg.url,
               **gateway_env(telegram=telegram, graph=graph)}
        async with serving(GatewayProcess(tmp_path / "gw", env)) as gateway:
            async with running(Traffic(lambda: gateway.url, telegram)) as traffic:
                await acked_at_least(traffic, 40)
                telegram.fail("getUpdates", 429, retry_after=2)
                telegram.fail("getUpdates", 502, times=3)
                telegram.fail("sendMessage", 429, retry_after=1)
                telegram.fail("sendMessage", 502, times=3)
                graph.fail("send", 429, retry_after=1, times=2)
                graph.fail("send", 500, times=3)
                await acked_at_least(traffic, len(traffic.acknowledged()) + 80, within=45)
            audit = await settle(traffic, pg_payloads(pg))
            stored_chat = sum(1 for i in traffic.sent if i.channel in ("telegram", "whatsapp")
                              and i.marker in traffic.acknowledged())

            async def replies_out() -> bool:
                return len(telegram.sent) + len(graph.sent) >= stored_chat

            await wait_for(replies_out, within=45, what="every chat complaint answered")
    failed = sum(n for (_, status), n in telegram.responses.items() if status in (429, 502))
    notes = (f"{failed} Telegram 429/502 answers, Graph failures all served: "
             f"{not any(graph.failures.values())}; {len(telegram.sent) + len(graph.sent)} "
             f"replies for {stored_chat} chat complaints; {refusals(traffic)}")
    report.record("5. Telegram/Graph APIs answer 429 and 5xx", audit, elapsed(started), notes)
    assert audit.ok, audit
    assert telegram.flood_violations == 0  # retry_after obeyed
    assert_no_server_errors(traffic)


def sqlite_payloads(path: Path) -> Fetch:
    async def fetch() -> list[str]:
        def read() -> list[str]:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                return payload_rows(conn.execute("SELECT payload FROM complaints").fetchall())
            finally:
                conn.close()
        return await asyncio.to_thread(read)
    return fetch


BALLAST = "ballast.bin"


def fill(directory: Path) -> list[Path]:
    """Write a file until the filesystem is full; returns the files to delete to free space:
    the filler (when there was room to create it) and the ballast laid down beforehand, so
    freeing works even when the gateway's own data filled the disk first."""
    filler = directory / "filler.bin"
    chunk = b"\0" * 65536
    try:
        with open(filler, "wb") as fh:
            while True:
                fh.write(chunk)
                fh.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    return [path for path in (filler, directory / BALLAST) if path.exists()]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs (CI runs as root, as this needs) holding 4 MiB of ballast."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], check=True)
    (mount / BALLAST).write_bytes(b"\0" * (4 << 20))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_6_disk_full_under_the_outbox(tmp_path: Path, small_disk: Path,
                                            broker: BrokerProcess, telegram: TelegramEmulator,
                                            report: Report) -> None:
    """The SQLite outbox and store (and attachments) live on a small tmpfs that fills up:
    intake answers 503 with Retry-After, never 500; space freed, it takes complaints again."""
    started = time.monotonic()
    env = {**kafka_env_for(broker.bootstrap, receipt_timeout_s=5), **gateway_env(telegram=telegram)}
    process = GatewayProcess(small_disk / "data", env)
    process.log_path = tmp_path / "gateway.log"  # the log must not need the full disk
    await process.start()
    database = small_disk / "data" / "lapor.db"
    try:
        async with running(Traffic(lambda: process.url, telegram)) as traffic:
            await acked_at_least(traffic, 40)
            fillers = await asyncio.to_thread(fill, small_disk)

            async def refused() -> bool:
                return traffic.statuses()["503"] >= 20

            await wait_for(refused, within=30, what="intake refusing with 503 on a full disk")
            assert (await readyz(process.url))["status"] in ("ready", "unavailable")
            for filler in fillers:
                filler.unlink()
            await acked_at_least(traffic, len(traffic.acknowledged()) + 40)
        audit = await settle(traffic, sqlite_payloads(database))
    finally:
        assert await stop(process) == 0, process.log()
    report.record("6. disk full under the outbox (tmpfs), space freed", audit,
                  elapsed(started), refusals(traffic))
    assert audit.ok, audit
    assert_no_server_errors(traffic)


@asynccontextmanager
async def committed_offsets(bootstrap: str, group: str, topic: str
                            ) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """A reader of ``group``'s committed offsets on ``topic``, summed over the partitions
    (a consumer that never subscribes, so it never joins the group nor disturbs it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        assert partitions, f"no partitions of {topic}"

        async def total() -> int:
            offsets = [await consumer.committed(TopicPartition(topic, p)) for p in partitions]
            return sum(o or 0 for o in offsets)

        yield total
    finally:
        await consumer.stop()


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_7_sink_killed_between_store_write_and_offset_commit(
        tmp_path: Path, pg: PgDatabase, broker: BrokerProcess, telegram: TelegramEmulator,
        report: Report) -> None:
    """The sink runs as its own process. It is frozen (SIGSTOP) at random moments until a
    moment is caught where the store holds more complaints than the group's committed offsets
    account for, i.e. after the store write and before the offset commit; then kill -9. Every
    complaint is published once here (receipt timeout far away), so the comparison is exact."""
    started = time.monotonic()
    kafka = kafka_env_for(broker.bootstrap, receipt_timeout_s=90)
    env = {**kafka, "LAPOR_STORE__URL": pg.url, **gateway_env(telegram=telegram)}
    gateway = GatewayProcess(tmp_path / "gw", env, command="gateway")
    sink = GatewayProcess(tmp_path / "sink", env, command="sink")
    await gateway.start()
    await sink.start()
    group = kafka["LAPOR_KAFKA__SINK_GROUP"]
    topic = kafka["LAPOR_KAFKA__TOPIC_PREFIX"] + "complaints.v1"
    caught = None
    try:
        async with running(Traffic(lambda: gateway.url, telegram, rate=40)) as traffic:
            await acked_at_least(traffic, 40)
            assert sink.process is not None
            deadline = time.monotonic() + 40
            async with committed_offsets(broker.bootstrap, group, topic) as committed_total:
                while caught is None and time.monotonic() < deadline:
                    sink.process.send_signal(signal.SIGSTOP)
                    try:
                        stored = (await pg.fetch("SELECT count(*) FROM complaints"))[0][0]
                        committed = await committed_total()
                        if stored > committed > 0:  # mid-stream, and the reader works
                            caught = (stored, committed)
                            sink.kill9()
                            break
                    finally:
                        if caught is None:
                            sink.process.send_signal(signal.SIGCONT)
                    await asyncio.sleep(0.013 * (1 + len(traffic.sent) % 7))  # vary the phase
            assert caught is not None, "never caught the sink between write and commit"
            sink = GatewayProcess(tmp_path / "sink", env, command="sink")
            await sink.start()
            await acked_at_least(traffic, len(traffic.acknowledged()) + 40)
        audit = await settle(traffic, pg_payloads(pg))
    finally:
        assert await stop(gateway) == 0, gateway.log()
        if sink.process is not None and sink.process.poll() is None:
            await stop(sink)
    report.record("7. sink kill -9 between store write and offset commit", audit,
                  elapsed(started),
                  f"killed with {caught[0]} stored vs {caught[1]} committed offsets; "
                  f"{refusals(traffic)}")
    assert audit.ok, audit
    assert_no_server_errors(traffic)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


BOUND = 150  # outbox_max_pending in the back-pressure scenario
RSS_LIMIT_MIB = 400  # the gateway's resident memory while refusing a flood


@pytest.mark.timeout(SCENARIO_TIMEOUT)
async def test_8_back_pressure_when_kafka_is_unreachable(
        tmp_path: Path, pg: PgDatabase, telegram: TelegramEmulator, report: Report) -> None:
    """Kafka unreachable: the outbox absorbs up to ``outbox_max_pending``, then intake answers
    503 + Retry-After (a redelivery of a known complaint still gets its answer); memory stays
    bounded under a flood; Kafka back, everything drains and intake accepts again."""
    started = time.monotonic()
    late = BrokerProcess()  # the port is reserved, nothing listens yet
    kafka = kafka_env_for(late.bootstrap, receipt_timeout_s=5)
    env = {**kafka, "LAPOR_STORE__URL": pg.url, "LAPOR_GATEWAY__OUTBOX_MAX_PENDING": str(BOUND),
           **gateway_env(telegram=telegram)}
    gateway = GatewayProcess(tmp_path / "gw", env, command="gateway")
    sink = GatewayProcess(tmp_path / "sink", env, command="sink")
    await gateway.start()
    await sink.start()
    assert gateway.process is not None
    peak = baseline = rss_kib(gateway.process.pid)
    try:
        async with running(Traffic(lambda: gateway.url, telegram, rate=60)) as traffic:
            async def refusing() -> bool:
                return traffic.statuses()["503"] >= 20

            await wait_for(refusing, within=30, what="intake refusing past the bound")
            pending = (await readyz(gateway.url))["outbox"]["pending"]
            assert BOUND <= pending <= BOUND + 100, pending  # the count is refreshed each second
            first = next(i for i in traffic.sent if i.channel == "api" and i.status == 202)
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{gateway.url}/api/v1/complaints",
                                        headers={"X-API-Key": API_KEY}, json={
                                            "external_id": first.marker, "body": "ulang"}) as r:
                    assert r.status == 202 and (await r.json())["duplicate"] is True
                # A flood while refusing: 2,000 requests, 200 at a time; memory must not grow.
                flood = Traffic(lambda: gateway.url, channels=("api", "whatsapp"))
                for _ in range(10):
                    await asyncio.gather(*(flood.send(session, ("api", "whatsapp")[n % 2])
                                           for n in range(200)))
                    peak = max(peak, rss_kib(gateway.process.pid))
            assert set(flood.statuses()) == {"503"}, flood.statuses()
            late.start()
            await acked_at_least(traffic, len(traffic.acknowledged()) + 60, within=60)
        audit = await settle(traffic, pg_payloads(pg))
    finally:
        assert await stop(gateway) == 0, gateway.log()
        await stop(sink)
        late.stop()
    report.record("8. Kafka unreachable: back-pressure at the outbox bound", audit,
                  elapsed(started),
                  f"bound {BOUND}; 2,000-request flood refused; RSS {baseline // 1024} MiB "
                  f"before, peak {peak // 1024} MiB (limit {RSS_LIMIT_MIB}); "
                  f"{refusals(traffic)}")
    assert audit.ok, audit
    assert_no_server_errors(traffic)
    assert peak // 1024 < RSS_LIMIT_MIB
