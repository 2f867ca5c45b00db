"""Ctrl-C in a terminal: SIGINT goes to the whole foreground process group, the gateway and its
embedded broker child alike."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.integration.support import GatewayProcess, readyz, wait_for


async def _gone(pid: int) -> bool:
    return _exited(pid)


def _exited(pid: int) -> bool:
    """The process has exited (a zombie not reaped yet counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_ctrl_c_stops_the_gateway_and_its_broker_without_a_false_alarm(
        tmp_path: Path) -> None:
    """The broker must not take the group's SIGINT (it would exit while the gateway still
    drains, and its supervisor would log a crash and start another): the gateway drains, then
    stops the broker itself, and exits 0 with nothing logged as an error."""
    gateway = GatewayProcess(tmp_path / "gw", {}, own_group=True)
    await gateway.start()
    assert gateway.process is not None
    broker_pid = (await readyz(gateway.url))["embedded_broker"]["pid"]

    os.killpg(gateway.process.pid, signal.SIGINT)

    assert gateway.process.wait(30) == 0, gateway.log()
    await wait_for(lambda: _gone(broker_pid), within=10, what="the broker stopped")
    log = gateway.log()
    assert '"msg":"stopped"' in log
    assert '"level":"ERROR"' not in log, log
