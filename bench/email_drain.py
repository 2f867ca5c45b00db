"""How fast the email connector drains a full mailbox into the durable outbox.

Usage (from the repository root; needs Dovecot, as the tests do)::

    python bench/email_drain.py                 # 10,000 messages
    python bench/email_drain.py --messages 2000 --batch 100

A Dovecot (the tests' :class:`tests.emulators.dovecot.DovecotServer`) gets a Maildir of
``--messages`` real-looking complaints written directly (plain, quoted-printable, HTML-only,
a reply with a quote and a signature, one with a small JPEG attachment). Then, in the same run:

* baseline: a raw imapclient ``UID FETCH BODY.PEEK[]`` of the whole mailbox in batches of
  ``--batch``, no processing: what the IMAP server and the socket allow;
* the connector: :class:`connectors.email.EmailConnector` through the real intake (normaliser
  with the routing rules, SQLite outbox, attachment store): fetch, parse, clean, submit, flag
  ``\\Seen`` + keyword, save the cursor; timed until every message is flagged.

Prints a table with messages/s and the ratio connector / baseline; exits 1 under ``--goal``
messages/s with ``--check``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.email import EmailSettings  # noqa: E402
from connectors.email import EmailConnector  # noqa: E402
from forwarder.db import open_database  # noqa: E402
from forwarder.outbox import Outbox  # noqa: E402
from forwarder.replies import ReplyQueue  # noqa: E402
from forwarder.store import CentralStore  # noqa: E402
from gateway.attachments import AttachmentStore  # noqa: E402
from gateway.intake import GatewayIntake  # noqa: E402
from gateway.status import StatusService  # noqa: E402
from normalizer.routing import Router  # noqa: E402
from tests.emulators.dovecot import DovecotServer, _mail_owner  # noqa: E402

USER, PASSWORD = "gateway", "rahasia"
OURS = "lapor@kaltimprov.go.id"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(2000)
PLACES = ["Jl. Juanda", "Jl. M. Yamin", "Pasar Segiri", "Sempaja", "Jl. Antasari", "Loa Janan"]
PROBLEMS = ["jalan berlubang", "lampu jalan mati", "sampah menumpuk", "air PDAM tidak mengalir",
            "drainase tersumbat", "parkir liar"]


def message(n: int) -> bytes:
    """The n-th message of the mailbox (five shapes in turn)."""
    place, problem = PLACES[n % len(PLACES)], PROBLEMS[(n // 7) % len(PROBLEMS)]
    text = (f"Selamat siang, di {place} RT {n % 40:02d} ada {problem} sejak minggu lalu "
            f"(laporan nomor {n}). Mohon segera ditindaklanjuti. Terima kasih.")
    head = (f"From: Warga {n} <warga{n}@example.id>\r\nTo: {OURS}\r\n"
            f"Subject: Laporan {problem} di {place}\r\nMessage-ID: <bench-{n}@example.id>\r\n"
            "Date: Mon, 02 Nov 2026 08:15:00 +0800\r\nMIME-Version: 1.0\r\n")
    shape = n % 5
    if shape == 0:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
                + "\r\n").encode()
    if shape == 1:
        body = text.replace("=", "=3D") + "=\r\n berlanjut.\r\n"
        return (head + "Content-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body).encode()
    if shape == 2:
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>" + text
                + "</p><div class=\"gmail_quote\"><blockquote>lama</blockquote></div>"
                "</body></html>\r\n").encode()
    if shape == 3:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text
                + "\r\n\r\nPada Sen, 2 Nov 2026, LAPOR <lapor@kaltimprov.go.id> menulis:\r\n"
                "> Terima kasih\r\n\r\n-- \r\nWarga\r\n").encode()
    jpeg = base64.encodebytes(JPEG).decode().replace("\n", "\r\n")
    return (head + "Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n--B\r\n"
            "Content-Type: image/jpeg; name=\"foto.jpg\"\r\nContent-Disposition: attachment; "
            "filename=\"foto.jpg\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + jpeg
            + "--B--\r\n").encode()


def write_maildir(server: DovecotServer, count: int) -> None:
    """Deliver ``count`` messages straight into the Maildir's ``new/`` (fast)."""
    maildir = server.maildir(USER)
    _, _, uid, gid = _mail_owner()
    for sub in ("", "cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
        os.chown(maildir / sub, uid, gid)
    stamp = int(time.time())
    for n in range(count):
        path = maildir / "new" / f"{stamp}.M{n}P{os.getpid()}.bench"
        path.write_bytes(message(n))
        os.chown(path, uid, gid)


def client(server: DovecotServer) -> IMAPClient:
    imap = IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=60)
    imap.login(USER, PASSWORD)
    return imap


def baseline(server: DovecotServer, batch: int) -> tuple[int, float]:
    """A raw fetch of every message, no processing: (messages, seconds)."""
    imap = client(server)
    try:
        imap.select_folder("INBOX", readonly=True)
        started = time.perf_counter()
        uids = sorted(imap.search(["ALL"]))
        fetched = 0
        for start in range(0, len(uids), batch):
            data = imap.fetch(uids[start:start + batch], ["BODY.PEEK[]"])
            fetched += sum(1 for item in data.values() if item.get(b"BODY[]"))
        return fetched, time.perf_counter() - started
    finally:
        imap.logout()


async def drain(server: DovecotServer, count: int, batch: int, data_dir: Path) -> float:
    """Seconds the connector takes to make every message durable and flag it."""
    db = await open_database(f"sqlite:///{data_dir}/lapor.db")
    try:
        async with Outbox(db) as outbox:
            intake = GatewayIntake(outbox, AttachmentStore(data_dir / "att", 10 * 1024 * 1024),
                                   StatusService(CentralStore(db), outbox), ReplyQueue(db),
                                   router=Router.from_files(), repeat_window_s=86400.0)
            settings = EmailSettings(
                enabled=True, imap_host="127.0.0.1", imap_port=server.port, imap_ssl=False,
                username=USER, password=SecretStr(PASSWORD), from_address=OURS,
                fetch_batch=batch)
            connector = EmailConnector(settings)
            cursor = f"email:{OURS}:INBOX"
            started = time.perf_counter()
            await connector.start(intake)
            try:
                while True:
                    value = await outbox.load_cursor(cursor)
                    if value and f'"last_uid":{count},' in value:
                        break
                    if time.perf_counter() - started > 600:
                        raise SystemExit("the connector did not drain the mailbox in 600 s")
                    await asyncio.sleep(0.05)
                elapsed = time.perf_counter() - started
            finally:
                await connector.stop()
            rows = await db.fetch("SELECT count(*) FROM outbox")
            if int(rows[0][0]) != count:
                raise SystemExit(f"expected {count} complaints, the outbox has {rows[0][0]}")
            return elapsed
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="messages per FETCH")
    parser.add_argument("--goal", type=float, default=300.0, help="messages/s to reach")
    parser.add_argument("--check", action="store_true", help="exit 1 under --goal")
    args = parser.parse_args(argv)
    server = DovecotServer(users={USER: PASSWORD})
    try:
        write_maildir(server, args.messages)
        server.start()
        warm = client(server)  # Dovecot indexes new/ on the first SELECT: not measured
        warm.select_folder("INBOX", readonly=True)
        warm.logout()
        fetched, base_s = baseline(server, args.batch)
        with tempfile.TemporaryDirectory(prefix="lapor-bench-") as data_dir:
            connector_s = asyncio.run(drain(server, args.messages, args.batch, Path(data_dir)))
    finally:
        server.cleanup()
    base_rate = fetched / base_s
    rate = args.messages / connector_s
    print(f"{'what':<44} {'messages':>9} {'seconds':>8} {'msg/s':>8}")
    print(f"{'baseline: raw imapclient FETCH BODY.PEEK[]':<44} {fetched:>9} {base_s:>8.2f} "
          f"{base_rate:>8.0f}")
    print(f"{'connector: fetch, parse, store, flag':<44} {args.messages:>9} {connector_s:>8.2f} "
          f"{rate:>8.0f}")
    print(f"ratio connector / baseline: {rate / base_rate:.2f}   goal: >= {args.goal:.0f} msg/s "
          f"({'met' if rate >= args.goal else 'MISSED'})")
    return 1 if args.check and rate < args.goal else 0


if __name__ == "__main__":
    sys.exit(main())
