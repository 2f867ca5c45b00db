"""A real Dovecot IMAP server for tests: its own config in a temp dir, passwd-file users, a
Maildir per user, no SSL, 127.0.0.1 on a free port (docs/CHANNELS.md sections 3.3 and 3.4).

Dovecot 2.3 and 2.4 need different configs; :func:`dovecot_version` reads ``dovecot --version``
and :func:`render_config` writes the matching one. Run as root, the mail belongs to ``nobody``;
run as another user, Dovecot runs every process as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from forwarder.broker import free_port as broker_free_port

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
START_WITHIN_S = 20.0


def dovecot_version() -> tuple[int, int]:
    """``(major, minor)`` of the installed Dovecot."""
    out = subprocess.run([DOVECOT, "--version"], check=True, capture_output=True, text=True)
    major, minor = out.stdout.split()[0].split(".")[:2]
    return int(major), int(minor)


def free_port() -> int:
    """A free loopback port (outside the ephemeral range; see ``forwarder.broker``)."""
    return broker_free_port()


def _mail_owner() -> tuple[str, str, int, int]:
    """The system user and group owning the mail (``nobody`` when we are root)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("nobody")
        group = "nogroup"
        try:
            import grp

            grp.getgrnam(group)
        except KeyError:
            group = "nobody"
        return entry.pw_name, group, entry.pw_uid, entry.pw_gid
    entry = pwd.getpwuid(os.geteuid())
    import grp

    return entry.pw_name, grp.getgrgid(os.getegid()).gr_name, os.geteuid(), os.getegid()


def render_config(root: Path, port: int, version: tuple[int, int]) -> str:
    """The Dovecot config for ``root`` (run, state, log, users file and mail below it)."""
    user, group, uid, gid = _mail_owner()
    unprivileged = os.geteuid() != 0
    run_as = ""
    if unprivileged:
        run_as = (f"default_internal_user = {user}\ndefault_internal_group = {group}\n"
                  f"default_login_user = {user}\n")
    # Unprivileged: no chroot for the login process and no root auth worker.
    chroot = "  chroot =\n" if unprivileged else ""
    listener = (f"service imap-login {{\n{chroot}  inet_listener imap {{\n"
                f"    address = 127.0.0.1\n    port = {port}\n  }}\n"
                f"  inet_listener imaps {{\n    port = 0\n  }}\n}}\n")
    if unprivileged:
        listener += (f"service auth-worker {{\n  user = {user}\n}}\n"
                     "service anvil {\n  chroot =\n}\n")
    common = (f"protocols = imap\nlisten = 127.0.0.1\nbase_dir = {root}/run\n"
              f"state_dir = {root}/state\nlog_path = {root}/dovecot.log\n"
              f"info_log_path = {root}/dovecot.log\nssl = no\n"
              f"auth_mechanisms = plain login\nfirst_valid_uid = {min(uid, 500)}\n"
              f"first_valid_gid = 0\n{run_as}")
    if version >= (2, 4):
        return (
            "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n" + common
            + "auth_allow_cleartext = yes\n"
            + "mail_driver = maildir\n"
            + f"mail_home = {root}/mail/%{{user}}\n"
            + f"mail_path = {root}/mail/%{{user}}/Maildir\n"
            + "passdb users {\n  driver = passwd-file\n"
            + f"  passwd_file_path = {root}/users\n}}\n"
            + "userdb static {\n  driver = static\n"
            + f"  fields {{\n    uid = {uid}\n    gid = {gid}\n"
            + f"    home = {root}/mail/%{{user}}\n  }}\n}}\n"
            + listener
        )
    return (
        common
        + "disable_plaintext_auth = no\n"
        + f"mail_location = maildir:{root}/mail/%u/Maildir\n"
        + "passdb {\n  driver = passwd-file\n"
        + f"  args = scheme=PLAIN username_format=%u {root}/users\n}}\n"
        + "userdb {\n  driver = static\n"
        + f"  args = uid={uid} gid={gid} home={root}/mail/%u\n}}\n"
        + listener
    )


class DovecotServer:
    """One Dovecot instance under ``root``; ``start``/``stop``/``kill`` as the tests need."""

    def __init__(self, root: Path | None = None, users: dict[str, str] | None = None,
                 extra_config: str = "") -> None:
        """``root`` must be reachable by Dovecot's unprivileged users (pytest's ``tmp_path``
        is not: mode 0700); by default a fresh world-traversable temp dir, removed by
        :meth:`cleanup`."""
        self._owned = root is None
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="lapor-dovecot-"))
            root.chmod(0o755)
        self.root = root
        self.users = users or {"gateway": "rahasia"}
        self.port = free_port()
        self.version = dovecot_version()
        self.extra_config = extra_config  # appended (e.g. an imap_capability without IDLE)
        self.config = root / "dovecot.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._write()

    def _write(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "users").write_text(
            "".join(f"{name}:{{PLAIN}}{password}\n" for name, password in self.users.items()))
        self.config.write_text(render_config(self.root, self.port, self.version)
                               + self.extra_config)
        _, _, uid, gid = _mail_owner()
        os.chown(self.root / "mail", uid, gid)
        for name in self.users:
            home = self.root / "mail" / name
            home.mkdir(exist_ok=True)
            os.chown(home, uid, gid)

    def maildir(self, user: str = "gateway") -> Path:
        """The user's Maildir (INBOX: ``cur``/``new``; ``dovecot-uidlist`` holds UIDs)."""
        return self.root / "mail" / user / "Maildir"

    def recreate_maildir(self, user: str = "gateway") -> None:
        """Delete the user's Maildir (indexes, UID list, flags) and deliver its messages again
        as new mail: the next SELECT shows a new UIDVALIDITY. Call while stopped."""
        maildir = self.maildir(user)
        messages = {path.name.split(":")[0]: path.read_bytes()
                    for sub in ("cur", "new") for path in (maildir / sub).iterdir()}
        shutil.rmtree(maildir)
        _, _, uid, gid = _mail_owner()
        for sub in ("", "cur", "new", "tmp"):
            (maildir / sub).mkdir(exist_ok=True)
            os.chown(maildir / sub, uid, gid)
        for name, data in messages.items():
            path = maildir / "new" / name
            path.write_bytes(data)
            os.chown(path, uid, gid)

    def start(self) -> None:
        """Start ``dovecot -F`` and wait until the IMAP port answers."""
        log = open(self.root / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen([DOVECOT, "-F", "-c", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not answer on {self.port}: {self.log()[-2000:]}")

    def stop(self) -> None:
        """Stop cleanly (SIGTERM to the master ends every child)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self._wait_port_closed()

    def kill(self) -> None:
        """Kill the master and every Dovecot process of this instance (a crash)."""
        if self._process is None:
            return
        pid = self._process.pid
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        self._process.kill()
        self._process.wait()
        for child in children.stdout.split():
            try:
                os.kill(int(child), signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process = None
        self._wait_port_closed()

    def _wait_port_closed(self) -> None:
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return
            time.sleep(0.05)

    def cleanup(self) -> None:
        """Stop, and remove the directory when it was ours."""
        self.stop()
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""
