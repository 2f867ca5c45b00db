"""Shared helpers of the ``bench/`` scripts: gateway and baseline processes, a multi-process
load generator, percentiles, RSS and table printing.

The load generator runs in child processes (``multiprocessing`` spawn) so the process under
test keeps its own core. Two modes:

* closed loop (:func:`closed_loop`): ``concurrency`` requests always in flight, for
  ``seconds``: the peak accepted rate;
* open loop (:func:`open_loop`): requests sent on a fixed schedule at ``rate`` per second
  (latency counted from the scheduled moment, so a stall is not hidden by the client
  waiting: no coordinated omission).

Each request is a signed WhatsApp Cloud API webhook body with a unique wamid (one text message,
the shape of docs/CHANNELS.md 1.2), signed with ``X-Hub-Signature-256`` exactly as Meta does.
Bodies are generated and signed before the clock starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
APP_SECRET = "bench-app-secret"
PHONE_NUMBER_ID = "106540352242922"
WEBHOOK_PATH = "/webhooks/whatsapp"
TEXTS = (
    "Jalan rusak parah di Jl. Juanda Samarinda, lubang besar membahayakan pengendara motor.",
    "Lampu penerangan jalan mati sejak tiga hari yang lalu di Kelurahan Sempaja Selatan.",
    "Sampah menumpuk di pasar Segiri, bau menyengat dan tidak diangkut petugas.",
    "Pelayanan KTP elektronik di kantor kecamatan Sungai Kunjang sangat lambat kemarin.",
    "Banjir setinggi lutut di Jalan Pramuka setiap hujan deras, drainase tersumbat.",
)


# --------------------------------------------------------------------------- numbers, tables


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str = "") -> str:
    """A plain text table (right-aligned numbers), with an optional title line."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title] if title else []
    for index, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if index and col else c.ljust(w)
                               for col, (c, w) in enumerate(zip(row, widths, strict=True)))
                     .rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of a process (``VmRSS`` of ``/proc/<pid>/status``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child_rss_kib(pid: int, module: str) -> int:
    """Resident memory (KiB) of ``pid``'s children running ``python -m <module>`` (0: none)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if module.encode() in argv:
                    total += rss_kib(int(child))
            except OSError:
                continue  # it exited meanwhile
    return total


# --------------------------------------------------------------------------- webhook bodies


def whatsapp_body(wamid: str, sender: str, text: str, ts: int) -> bytes:
    """One signed-to-be WhatsApp ``messages`` webhook body."""
    return orjson.dumps({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA0", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881",
                         "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Warga"}, "wa_id": sender}],
            "messages": [{"from": sender, "id": wamid, "timestamp": str(ts), "type": "text",
                          "text": {"body": text}}],
        }}]}],
    })


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def make_requests(count: int, tag: str) -> list[tuple[str, bytes, str]]:
    """``count`` (wamid, body, signature) triples with unique wamids and distinct senders."""
    now = int(time.time())
    out = []
    for i in range(count):
        wamid = f"wamid.{tag}.{i}"
        sender = f"6281{int(hashlib.md5(wamid.encode()).hexdigest()[:8], 16) % 10**9:09d}"
        body = whatsapp_body(wamid, sender, f"{TEXTS[i % len(TEXTS)]} (#{tag}-{i})", now)
        out.append((wamid, body, sign(body)))
    return out


# --------------------------------------------------------------------------- load generator


@dataclass
class LoadResult:
    """What one load phase observed (over every client process)."""

    sent: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    #: (wamid, epoch seconds of the 200 answer) per accepted request.
    answered: list[tuple[str, float]]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


async def _client(url: str, requests: list[tuple[str, bytes, str]], concurrency: int,
                  seconds: float, rate: float, start_at: float) -> dict[str, Any]:
    latencies: list[float] = []
    answered: list[tuple[str, float]] = []
    errors = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = loop.time()
        end = t0 + seconds
        index = 0

        async def one(item: tuple[str, bytes, str], scheduled: float) -> None:
            nonlocal errors
            wamid, body, signature = item
            try:
                async with session.post(url, data=body, headers={
                        "Content-Type": "application/json",
                        "X-Hub-Signature-256": signature}) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            done = loop.time()
            if status == 200:
                latencies.append((done - scheduled) * 1000)
                answered.append((wamid, time.time()))
            else:
                errors += 1

        if rate <= 0:  # closed loop
            async def worker() -> None:
                nonlocal index, sent
                while loop.time() < end and index < len(requests):
                    item = requests[index]
                    index += 1
                    sent += 1
                    await one(item, loop.time())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:  # open loop: a fixed schedule, at most ``concurrency`` in flight
            gate = asyncio.Semaphore(concurrency)
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / rate

            async def gated(item: tuple[str, bytes, str], scheduled: float) -> None:
                try:
                    await one(item, scheduled)
                finally:
                    gate.release()

            while index < len(requests):
                scheduled = t0 + index * interval
                if scheduled >= end:
                    break
                wait = scheduled - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                await gate.acquire()
                task = asyncio.create_task(gated(requests[index], scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
                sent += 1
            if tasks:
                await asyncio.wait(tasks)
        elapsed = loop.time() - t0
    return {"sent": sent, "errors": errors, "seconds": elapsed, "latencies": latencies,
            "answered": answered}


def _client_process(args: tuple[str, int, float, float, float, str, int]) -> dict[str, Any]:
    url, concurrency, seconds, rate, start_at, tag, count = args
    requests = make_requests(count, tag)
    return asyncio.run(_client(url, requests, concurrency, seconds, rate, start_at))


def load(url: str, *, concurrency: int, seconds: float, rate: float = 0.0, processes: int = 1,
         max_requests: int | None = None) -> LoadResult:
    """Run one load phase from ``processes`` client processes; blocks until it ends.

    ``rate`` > 0 is open loop at that total rate; otherwise closed loop. Every request is a
    new complaint (unique wamid). ``max_requests`` bounds the bodies generated per process
    (default: enough for ``rate``, or 4,000/s closed loop).
    """
    per_rate = rate / processes if rate > 0 else 0.0
    if max_requests is None:
        max_requests = int((per_rate or 4000) * seconds * 1.1) + concurrency
    per_conc = max(1, concurrency // processes)
    # Bodies are made before start_at: leave time for it (about 20 us each).
    start_at = time.time() + 1.0 + max_requests * 30e-6
    run = uuid.uuid4().hex[:8]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        parts = pool.map(_client_process, [
            (url, per_conc, seconds, per_rate, start_at, f"{run}{p}", max_requests)
            for p in range(processes)])
    latencies = [v for part in parts for v in part["latencies"]]
    answered = [a for part in parts for a in part["answered"]]
    return LoadResult(
        sent=sum(p["sent"] for p in parts), ok=len(latencies),
        errors=sum(p["errors"] for p in parts),
        seconds=max(p["seconds"] for p in parts), latencies_ms=latencies, answered=answered)


# --------------------------------------------------------------------------- processes


class Process:
    """A child process (gateway or baseline) with its log under ``log_path``."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path = ROOT) -> None:
        self.argv = argv
        self.cwd = cwd
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=log,
                                          stdin=subprocess.DEVNULL, cwd=self.cwd)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def wait_http(self, url: str, within: float = 60.0) -> None:
        """Wait until ``url`` answers 200 (fails with the log tail when the process died)."""
        deadline = time.monotonic() + within

        async def probe() -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.get(url) as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise SystemExit(f"{self.argv[2:]} exited with {self.popen.returncode}:\n"
                                 f"{self.log_tail()}")
            if asyncio.run(probe()):
                return
            time.sleep(0.2)
        raise SystemExit(f"{url} not ready in {within}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def gateway_env(data_dir: Path, port: int, extra: Mapping[str, str] | None = None
                ) -> dict[str, str]:
    """Environment of a ``lapor-gateway run`` with the WhatsApp webhook on."""
    return {
        **os.environ,
        "LAPOR_GATEWAY__PORT": str(port),
        "LAPOR_GATEWAY__DATA_DIR": str(data_dir),
        "LAPOR_CONNECTORS__WHATSAPP__ENABLED": "true",
        "LAPOR_CONNECTORS__WHATSAPP__APP_SECRET": APP_SECRET,
        "LAPOR_CONNECTORS__WHATSAPP__VERIFY_TOKEN": "bench-verify",
        "LAPOR_CONNECTORS__WHATSAPP__ACCESS_TOKEN": "bench-token",
        "LAPOR_CONNECTORS__WHATSAPP__PHONE_NUMBER_ID": PHONE_NUMBER_ID,
        # The load comes from one address; Meta delivers from a few, so the per-address
        # webhook limit (a flood guard) is not what is measured here.
        "LAPOR_GATEWAY__RATE_LIMIT_WEBHOOK_PER_IP": "0",
        **(extra or {}),
    }


class Gateway:
    """``lapor-gateway run`` on a free port, with a Graph API stand-in for its replies."""

    def __init__(self, process: Process, url: str, graph: Process) -> None:
        self.process = process
        self.url = url
        self.graph = graph

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()
        self.graph.stop()

    def pending(self, queues: Sequence[str] = ("inbox", "outbox")) -> int:
        """What ``queues`` hold now, as ``/readyz`` reports it."""

        async def read() -> int:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{self.url}/readyz") as response:
                body = await response.json()
                return sum(int(body.get(queue, {}).get("pending", 0)) for queue in queues)

        return asyncio.run(read())

    def wait_idle(self, within: float = 600.0,
                  queues: Sequence[str] = ("inbox", "outbox")) -> bool:
        """Wait until ``queues`` (``/readyz``) have nothing pending (the previous load went all
        the way through), so one phase's backlog does not slow the next one down. False when
        ``within`` seconds were not enough."""
        deadline = time.monotonic() + within
        while self.pending(queues) > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return True


def start_gateway(data_dir: Path, *, extra_env: Mapping[str, str] | None = None,
                  args: Sequence[str] = (), tree: Path = ROOT) -> Gateway:
    """``lapor-gateway run`` (ready) with the WhatsApp webhook on; its replies go to a
    :mod:`_bare` stand-in of the Graph API. ``tree``: the source tree to run (another
    checkout, for a before/after comparison in one run)."""
    graph, graph_url = start_bare(data_dir, "graph")
    port = free_port()
    env = {"LAPOR_CONNECTORS__WHATSAPP__API_BASE": f"{graph_url}/v21.0", **(extra_env or {})}
    process = Process([sys.executable, "-m", "gateway.cli", "run", *args],
                      gateway_env(data_dir, port, env), data_dir / "gateway.log", tree)
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/readyz")
    except BaseException:
        process.stop()
        graph.stop()
        raise
    return Gateway(process, url, graph)


def start_bare(log_dir: Path, name: str = "bare") -> tuple[Process, str]:
    """The baseline: an aiohttp app that reads the body and answers 200, nothing else."""
    port = free_port()
    process = Process([sys.executable, str(ROOT / "bench" / "_bare.py"), str(port)], os.environ,
                      log_dir / f"{name}.log")
    process.start()
    url = f"http://127.0.0.1:{port}"
    process.wait_http(f"{url}/healthz")
    return process, url
