"""Helpers for integration tests: real PostgreSQL databases, a real broker, gateway processes."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg

from config.settings import KafkaSettings
from forwarder.broker import broker_binary, free_port
from forwarder.kafka import Producer, Topics, ensure_topics

PG_ADMIN_URL = os.environ.get("LAPOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")


async def wait_for(check: Callable[[], Awaitable[T]], *, within: float, what: str,
                   interval: float = 0.1) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except (OSError, aiohttp.ClientError, asyncpg.PostgresError) as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


class PgDatabase:
    """A PostgreSQL database created for one test and dropped after it."""

    def __init__(self, admin_url: str = PG_ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"lapor_test_{uuid.uuid4().hex[:12]}"
        self.url = admin_url.rsplit("/", 1)[0] + "/" + self.name

    async def create(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


class BrokerProcess:
    """A tansu broker child on a free loopback port (memory storage: a kill loses its log)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("broker did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def own_topics(broker: BrokerProcess, tag: str) -> tuple[KafkaSettings, Topics, Producer]:
    """Kafka settings with topics of this test's own (created, two partitions each) on
    ``broker``, and a started producer for them (the caller stops it)."""
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, enable_idempotence=False,
                             topic_prefix=f"{tag}{uuid.uuid4().hex[:8]}.", partitions=2)
    topics = Topics.from_settings(settings)
    await ensure_topics(broker.bootstrap, topics.all(), 2)
    producer = Producer(settings, broker.bootstrap)
    await producer.start()
    return settings, topics, producer


def kafka_env_for(bootstrap: str, *, receipt_timeout_s: float = 3) -> dict[str, str]:
    """Environment that points a gateway at ``bootstrap`` with its own topics and groups."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    return {
        "LAPOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "LAPOR_KAFKA__TOPIC_PREFIX": prefix,
        "LAPOR_KAFKA__SINK_GROUP": f"{prefix}sink",
        "LAPOR_KAFKA__RECEIPTS_GROUP": f"{prefix}receipts",
        "LAPOR_KAFKA__PARTITIONS": "3",
        # tansu refuses InitProducerId (docs/CHANNELS.md section 6).
        "LAPOR_KAFKA__ENABLE_IDEMPOTENCE": "false",
        "LAPOR_KAFKA__RECEIPT_TIMEOUT_S": str(receipt_timeout_s),
    }


def running_broker() -> Iterator[BrokerProcess]:
    """Body of a session fixture: one broker; tests isolate themselves with topic prefixes."""
    process = BrokerProcess()
    process.start()
    yield process
    process.stop()


class GatewayProcess:
    """``lapor-gateway <command>`` as a child process, reachable at ``self.url``."""

    def __init__(self, data_dir: Path, env: Mapping[str, str], command: str = "run", *,
                 own_group: bool = False) -> None:
        """``own_group``: in a process group of its own, as a shell runs a command, so that a
        test can signal the whole group as a terminal's Ctrl-C does."""
        self.own_group = own_group
        self.data_dir = data_dir
        self.port = free_port()
        self.command = command
        self.env = {
            **os.environ,
            "LAPOR_GATEWAY__PORT": str(self.port),
            "LAPOR_GATEWAY__DATA_DIR": str(data_dir),
            "LAPOR_GATEWAY__SHUTDOWN_GRACE_S": "3",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"gateway-{self.port}.log"
        self.url = f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the child process (without waiting for it to be ready)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", self.command], env=self.env,
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                process_group=0 if self.own_group else None,
            )

    async def start(self, within: float = 30.0) -> None:
        """Start the child and wait until ``/readyz`` answers 200."""
        self.spawn()

        async def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited with {self.process.returncode}:\n"
                                     f"{self.log()}")
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{self.url}/readyz") as response:
                return response.status == 200

        await wait_for(ready, within=within, what=f"gateway ready\n{self.log()}")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"gateway ignored SIGTERM for {timeout}s:\n{self.log()}") from exc

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""


async def readyz(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        data: dict[str, Any] = await response.json()
        return data


def browser() -> aiohttp.ClientSession:
    """A client session that keeps cookies for 127.0.0.1 like a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


_HIDDEN = re.compile(r'name="(csrf_token|submission_id)" value="([^"]+)"')


async def open_form(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """GET the form (sets the CSRF cookie in ``session``); return its hidden fields."""
    async with session.get(f"{url}/") as response:
        assert response.status == 200, await response.text()
        return dict(_HIDDEN.findall(await response.text()))


def form_data(hidden: Mapping[str, str], fields: Mapping[str, str],
              files: list[tuple[str, bytes, str]] = ()) -> aiohttp.FormData:  # type: ignore[assignment]
    data = aiohttp.FormData()
    for key, value in {**hidden, **fields}.items():
        data.add_field(key, value)
    for name, content, ctype in files:
        data.add_field("lampiran", io.BytesIO(content), filename=name, content_type=ctype)
    return data


TRACKING_RE = re.compile(r'id="kode-pelacakan">([0-9A-Z]{5}-[0-9A-Z]{5})<')
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
