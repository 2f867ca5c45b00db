"""A private PostgreSQL server for the fault suite: restarting it disturbs nobody else.

``initdb`` into a temporary directory owned by the ``postgres`` user (PostgreSQL refuses to
run as root), then ``pg_ctl`` on a free loopback port. :meth:`PrivatePostgres.crash_restart`
stops it with ``-m immediate`` (no shutdown checkpoint: recovery on the next start, like a
crash) and starts it again.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from forwarder.broker import free_port


def _pg_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    assert found, "PostgreSQL server binaries not found under /usr/lib/postgresql"
    return found[-1].parent


PG_BIN = _pg_bin()


def _as_postgres(args: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class PrivatePostgres:
    """One throw-away PostgreSQL cluster on ``127.0.0.1:<port>`` with trust authentication."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lapor-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / args[0]), *args[1:]]), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def start(self) -> None:
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                   "-c max_connections=200 -c fsync=on")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def crash_restart(self) -> None:
        """Stop without a checkpoint (every connection dies) and start again."""
        self.stop("immediate")
        self.start()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already down
        shutil.rmtree(self.root, ignore_errors=True)
