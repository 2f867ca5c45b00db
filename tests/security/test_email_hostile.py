"""Hostile email: MIME bombs, malformed mail, path traversal in attachment names, and script
in what an operator or a citizen sees. Each message becomes a complaint with safe content or
a dead letter keeping its raw bytes and a reason; the connector never crashes and the mailbox
never stalls behind it.

The parser is tested directly (fast, each case exact); one test appends the whole corpus to a
real Dovecot between good mail and checks the connector drains all of it; one runs a whole
gateway on a real Dovecot and reads the status page and the ops dashboard.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import re
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.email import EmailConnector
from connectors.email_mime import MAX_DEPTH, MAX_PARTS, ParsedMail, parse_mail
from errors import ValidationFailed
from normalizer.schema import CONTROL_CHARACTERS
from tests.emulators.dovecot import DovecotServer
from tests.emulators.telegram import TelegramEmulator
from tests.integration.test_email import (
    KEYWORD,
    PASSWORD,
    USER,
    Store,
    all_flagged,
    append,
    dovecot,
    flags,
    mail,
    store,
)
from tests.integration.test_email import (
    settings as email_settings,
)
from tests.security.conftest import OPS_TOKEN, Gateway, start_gateway
from tests.unit.test_email_mime import OURS

__all__ = ["dovecot", "store"]  # fixtures shared with test_email

MiB = 1024 * 1024
MAX_ATTACHMENTS = 10
parse = partial(parse_mail, max_attachment_bytes=MiB, max_attachments=MAX_ATTACHMENTS)
HEAD = b"From: Warga <warga@example.id>\r\nSubject: Laporan\r\nMIME-Version: 1.0\r\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def multipart(*parts: bytes, boundary: str = "B", head: bytes = HEAD) -> bytes:
    body = b"".join(f"--{boundary}\r\n".encode() + p + b"\r\n" for p in parts)
    return (head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
            + body + f"--{boundary}--\r\n".encode())


def text_part(text: str = "Jembatan retak di Desa Sungai Kapih, mohon diperiksa.") -> bytes:
    return b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode()


def file_part(disposition: bytes, data: bytes = PNG, ctype: bytes = b"image/png",
              encoding: bytes = b"base64") -> bytes:
    body = base64.encodebytes(data) if encoding == b"base64" else data
    return (b"Content-Type: " + ctype + b"\r\nContent-Transfer-Encoding: " + encoding
            + b"\r\nContent-Disposition: attachment; " + disposition + b"\r\n\r\n" + body)


def nested_multiparts(depth: int) -> bytes:
    inner = text_part("Terdalam")
    for level in range(depth):
        inner = (f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n'
                 .encode() + inner + f"\r\n--n{level}--\r\n".encode())
    return HEAD + inner


def nested_forwards(depth: int) -> bytes:
    inner = b"From: asal@example.id\r\nSubject: Asal\r\n" + text_part("Pesan paling dalam")
    for level in range(depth):
        inner = (f"From: penerus{level}@example.id\r\nSubject: Fwd {level}\r\n"
                 "Content-Type: message/rfc822\r\n\r\n").encode() + inner
    return b"Message-ID: <fwd-bomb@example.id>\r\n" + inner


def zip_bomb() -> bytes:
    """About 20 KiB that would inflate to 20 MiB: to us it is only bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("nol.bin", (2026, 1, 1, 0, 0, 0)), b"\0" * (20 * MiB),
                         zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


ZIP_BOMB = zip_bomb()


TRAVERSAL = {  # Content-Disposition parameters, and the name each one decodes to
    b'filename="../../../etc/passwd.png"': "../../../etc/passwd.png",
    b"filename*=UTF-8''..%2F..%2Fetc%2Fcron.d%2Fx.png": "../../etc/cron.d/x.png",
    b"filename*0*=UTF-8''..%2F..%2F;\r\n filename*1=\"root.png\"": "../../root.png",
    b'filename="=?utf-8?B?Li4vLi4vZXRjL3NoYWRvdy5wbmc=?="': "../../etc/shadow.png",
    b'filename="..\\\\..\\\\windows\\\\win.png"': "..\\..\\windows\\win.png",
    b'filename="/var/lib/lapor/lapor.db"': "/var/lib/lapor/lapor.db",
}

#: name -> (raw message, what must become of it: "complaint" or the dead letter's reason).
HOSTILE: dict[str, tuple[bytes, str]] = {
    "multiparts nested 1,200 deep": (nested_multiparts(1200), "MIME bomb: 2400 boundary"),
    "forwards nested 1,500 deep": (nested_forwards(1500), "MIME bomb: parts nested too deeply"),
    "forwards nested past MAX_DEPTH": (nested_forwards(MAX_DEPTH + 12), "complaint"),
    "5,000 parts": (multipart(*(text_part(f"bagian {n}") for n in range(5000))),
                    "MIME bomb: 5001 boundary"),
    "300 attachments": (multipart(text_part(), *(file_part(f'filename="f{n}.png"'.encode())
                                                for n in range(300))), "complaint"),
    "3 MiB base64 attachment": (multipart(text_part(), file_part(
        b'filename="besar.png"', PNG + b"\x00" * (3 * MiB))), "complaint"),
    "zip bomb": (multipart(text_part(), file_part(b'filename="bom.zip"', ZIP_BOMB,
                                                  b"application/zip")), "complaint"),
    "missing boundary": (HEAD + b"Content-Type: multipart/mixed\r\n\r\n--X\r\n"
                         + text_part() + b"\r\n--X--\r\n", "complaint"),
    "wrong boundary, no end": (HEAD + b'Content-Type: multipart/mixed; boundary="Q"\r\n\r\n'
                               b"--X\r\n" + text_part(), "complaint"),
    "broken headers": (b"From: \xff\xfe <<@>>\r\nSubject: =?utf-8?B?broken\r\nDate: kemarin"
                       b"\r\nContent-Type: text/plain; charset=\r\n: empty name\r\n"
                       b"No colon here\r\n\r\nSaluran air mampet di Gang Mawar.\r\n",
                       "complaint"),
    "NUL in charset names": (b"From: a@example.id\r\nSubject: =?utf\x00-8?Q?Jalan_rusak?=\r\n"
                             b"Content-Type: text/plain; charset=\"utf\x00-8\"\r\n\r\n"
                             b"Jalan rusak parah di Loa Janan.\r\n", "complaint"),
    "unknown charsets": (b"From: a@example.id\r\nSubject: =?x-klingon?Q?Banjir_h=E9?=\r\n"
                         b"Content-Type: text/plain; charset=x-klingon\r\n\r\n"
                         b"Banjir di Samarinda Seberang \xe9\xff.\r\n", "complaint"),
    "invalid UTF-8 in headers": (b"From: \xc3\x28\xff <warga8@example.id>\r\nSubject: \xed\xa0"
                                 b"\x80\xf8\x88\x80\x80\x80 lampu\r\n\r\nLampu mati.\r\n",
                                 "complaint"),
    "1 MB header line": (b"From: a@example.id\r\nSubject: " + b"A" * MiB + b"\r\nX-Pad: "
                         + b"B" * MiB + b"\r\n\r\nSampah menumpuk di pasar.\r\n", "complaint"),
    "path traversal in names": (multipart(text_part(), *(file_part(d) for d in TRAVERSAL)),
                                "complaint"),
    "script in subject, body and name": (
        f"From: \"{XSS}\" <xss@example.id>\r\nSubject: {XSS}\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Isi {XSS} laporan</p>\r\n".encode(),
        "complaint"),
}


# --------------------------------------------------------------------------- the parser


def assert_safe(mail: ParsedMail) -> None:
    """Bounded output, nothing a later step could trip on."""
    assert len(mail.attachments) <= MAX_ATTACHMENTS
    assert all(len(part.data) <= MiB for part in mail.attachments)
    for text in (mail.text, mail.subject, mail.from_name or ""):
        assert not any("\udc80" <= ch <= "\udcff" for ch in text)  # no lone surrogates


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_message_parses_or_is_refused_as_a_bomb(name: str) -> None:
    raw, outcome = HOSTILE[name]
    started = time.monotonic()
    if outcome == "complaint":
        assert_safe(parse(raw))
    else:
        with pytest.raises(ValidationFailed, match=re.escape(outcome)):
            parse(raw)
    assert time.monotonic() - started < 5.0


def test_parts_up_to_the_limit_are_read() -> None:
    raw = multipart(*(text_part(f"bagian-{n}") for n in range(MAX_PARTS - 1)))
    mail = parse(raw)
    assert "bagian-0" in mail.text and f"bagian-{MAX_PARTS - 2}" in mail.text
    with pytest.raises(ValidationFailed, match="MIME bomb"):
        parse(multipart(*(text_part(f"bagian-{n}") for n in range(MAX_PARTS + 1))))


def test_forwards_past_max_depth_are_not_read() -> None:
    mail = parse(HOSTILE["forwards nested past MAX_DEPTH"][0])
    assert mail.text.count("Pesan diteruskan") <= MAX_DEPTH + 1  # headers of the last one
    assert "Pesan paling dalam" not in mail.text


def test_attachment_limits_count_and_size() -> None:
    many = parse(HOSTILE["300 attachments"][0])
    assert len(many.attachments) == MAX_ATTACHMENTS and len(many.skipped) == 300 - MAX_ATTACHMENTS
    big = parse(HOSTILE["3 MiB base64 attachment"][0])
    assert big.attachments == () and big.skipped == ("besar.png",)
    assert "Jembatan retak" in big.text


def test_a_compressed_attachment_is_only_its_bytes() -> None:
    [part] = parse(HOSTILE["zip bomb"][0]).attachments
    assert part.data == ZIP_BOMB and len(part.data) < 100 * 1024  # never inflated


def test_charsets_with_nul_unknown_or_invalid_bytes_decode() -> None:
    nul = parse(HOSTILE["NUL in charset names"][0])
    assert nul.subject == "Jalan rusak" and nul.text == "Jalan rusak parah di Loa Janan."
    unknown = parse(HOSTILE["unknown charsets"][0])
    assert unknown.subject.startswith("Banjir h") and "Samarinda" in unknown.text
    invalid = parse(HOSTILE["invalid UTF-8 in headers"][0])
    assert invalid.from_address == "warga8@example.id" and "lampu" in invalid.subject
    long = parse(HOSTILE["1 MB header line"][0])
    assert long.text == "Sampah menumpuk di pasar." and len(long.subject) == MiB


def test_broken_structure_keeps_the_words() -> None:
    broken = parse(HOSTILE["broken headers"][0])
    assert "Saluran air mampet di Gang Mawar." in broken.text  # after the broken header lines
    assert broken.date is None and broken.from_address is None
    assert broken.subject == "=?utf-8?B?broken"
    for name in ("missing boundary", "wrong boundary, no end"):
        mail = parse(HOSTILE[name][0])  # no boundary: one part; the words are still there
        words = mail.text + "".join(p.data.decode(errors="replace") for p in mail.attachments)
        assert "Jembatan retak" in words, name


def test_traversal_names_are_decoded_for_the_store_to_clean() -> None:
    mail = parse(HOSTILE["path traversal in names"][0])
    assert [part.name for part in mail.attachments] == list(TRAVERSAL.values())


@st.composite
def mime_trees(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A random MIME tree: odd types, charsets, encodings, boundaries that may be wrong."""
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "rfc822"] if depth < 4
                                else ["leaf"]))
    if kind == "multipart":
        boundary = draw(st.sampled_from(["b", "--", "", "b\x00", "ä"])) + str(depth)
        children = draw(st.lists(mime_trees(depth + 1), max_size=4))
        sub = draw(st.sampled_from(["mixed", "alternative", "related", "report"]))
        closing = draw(st.booleans())
        return (f'Content-Type: multipart/{sub}; boundary="{boundary}"\r\n\r\n'.encode()
                + b"".join(f"--{boundary}\r\n".encode() + c + b"\r\n" for c in children)
                + (f"--{boundary}--\r\n".encode() if closing else b""))
    if kind == "rfc822":
        return (b"Content-Type: message/rfc822\r\n\r\nFrom: x@y.id\r\n"
                + draw(mime_trees(depth + 1)))
    ctype = draw(st.sampled_from([b"text/plain", b"text/html", b"image/png", b"x/y", b""]))
    charset = draw(st.sampled_from([b"utf-8", b"utf\x00-8", b"gb2312", b"x-bogus", b"utf-16"]))
    encoding = draw(st.sampled_from([b"base64", b"quoted-printable", b"8bit", b"x-uue"]))
    name = draw(st.sampled_from([b"", b'; filename="../a.png"', b"; filename*=x''%FF%2F",
                                 b'; name="=?utf-8?B?////?="']))
    body = draw(st.binary(max_size=200))
    return (b"Content-Type: " + ctype + b"; charset=" + charset + name
            + b"\r\nContent-Transfer-Encoding: " + encoding
            + b"\r\nContent-Disposition: " + draw(st.sampled_from([b"attachment", b"inline",
                                                                     b"\xff"])) + name
            + b"\r\n\r\n" + body)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(mime_trees(), st.binary(max_size=100))
def test_random_mime_trees_parse_or_are_refused(tree: bytes, noise: bytes) -> None:
    """Bounded: 300 random trees (with random header bytes), each within 2 s."""
    for raw in (HEAD + tree, noise + b"\r\n" + tree):
        try:
            mail = parse(raw)
        except ValidationFailed as exc:
            assert str(exc).startswith("MIME bomb")
            continue
        assert_safe(mail)


# --------------------------------------------------------------------------- a real mailbox


async def test_hostile_mail_in_a_real_mailbox_never_stalls_the_good_mail(
        dovecot: DovecotServer, store: Store, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The corpus between good mail, appended to Dovecot: the connector drains all of it,
    flags every message, stores the good mail, and each hostile message is a safe complaint
    or a dead letter holding its raw bytes and the reason."""
    caplog.set_level(logging.WARNING)
    hostile = [raw for raw, _ in HOSTILE.values()]
    messages = [mail(0), *hostile, mail(1)]
    await asyncio.to_thread(append, dovecot, *messages)
    connector = EmailConnector(email_settings(
        dovecot.port, max_attachment_bytes=MiB, max_attachments=MAX_ATTACHMENTS))
    started = time.monotonic()
    await connector.start(store.intake)
    try:
        await all_flagged(dovecot, len(messages), within=60)
        drained_s = time.monotonic() - started
        await asyncio.to_thread(append, dovecot, mail(2))  # still reading afterwards
        await all_flagged(dovecot, len(messages) + 1)
        health = connector.health()
        assert health.state.value == "running" and not health.counters.get("errors"), health
    finally:
        await connector.stop()
    rows = await store.rows()
    letters = {bytes(r[1]): str(r[0]) for r in await store.db.fetch(
        "SELECT reason, payload FROM dead_letters")}
    assert {f"bulk-{n}@example.id" for n in range(3)} <= {r["native_id"] for r in rows}
    assert len(rows) + len(letters) == len(messages) + 1  # each message, once, somewhere
    for name, (raw, outcome) in HOSTILE.items():
        if outcome != "complaint":
            stored = next((k for k in letters if k.replace(b"\r\n", b"\n")
                           == raw.replace(b"\r\n", b"\n")), None)
            assert stored is not None, f"{name}: no dead letter with its raw bytes"
            assert letters[stored].startswith(outcome), (name, letters[stored])
    for row in rows:
        complaint = row["complaint"]
        for text in (complaint["body"], complaint.get("title") or "",
                     (complaint.get("reporter") or {}).get("name") or ""):
            assert not CONTROL_CHARACTERS.search(text), text[:80]
        for attachment in complaint["attachments"]:
            assert not re.search(r"[/\\]|^\.", attachment["name"]), attachment
    traversal = next(r for r in rows if "passwd" in r["complaint"]["body"]
                     or any("passwd" in a["name"] for a in r["complaint"]["attachments"]))
    assert {a["name"] for a in traversal["complaint"]["attachments"]} >= {"passwd.png",
                                                                          "x.png", "root.png"}
    written = await asyncio.to_thread(lambda: {
        p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file()})
    assert written <= {"att", "lapor.db", "lapor.db-wal", "lapor.db-shm"}, written
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    print(f"\n{len(messages)} messages ({len(HOSTILE)} hostile) drained in {drained_s:.1f}s: "
          f"{len(rows)} complaints, {len(letters)} dead letters")


# --------------------------------------------------------------------------- what people see


@pytest.fixture
async def mail_gw(tmp_path: Path, telegram: TelegramEmulator,
                  dovecot: DovecotServer) -> AsyncIterator[Gateway]:
    """The in-process gateway of the security suite, reading the real mailbox."""
    email = {"enabled": True, "imap_host": "127.0.0.1", "imap_port": dovecot.port,
             "imap_ssl": False, "username": USER, "password": PASSWORD, "from_address": OURS,
             "max_backoff_s": 1.0}
    async for target in start_gateway(tmp_path, telegram, connectors={"email": email}):
        yield target


async def test_script_in_mail_is_escaped_on_the_status_page_and_dashboard(
        mail_gw: Gateway, dovecot: DovecotServer) -> None:
    auto_reply = (f"From: robot@example.id\r\nSubject: {XSS}\r\nAuto-Submitted: {XSS}\r\n"
                  "Message-ID: <auto@example.id>\r\n\r\nSaya sedang cuti.\r\n").encode()
    await asyncio.to_thread(append, dovecot, HOSTILE["script in subject, body and name"][0],
                            auto_reply)
    await all_flagged(dovecot, 2)
    [(payload,)] = await mail_gw.rows("SELECT payload FROM outbox")
    complaint = orjson.loads(payload)
    assert XSS in complaint["title"]  # kept as the citizen wrote it: escaped when shown
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    shown = await page(mail_gw.client.get, f"/status/{complaint['tracking_code']}")
    assert escaped in shown
    cookie = await ops_session(mail_gw)
    dashboard = await page(partial(mail_gw.client.get, headers={"Cookie": cookie}), "/ops")
    assert "not a complaint: auto-submitted (" + escaped in dashboard  # the reason, escaped
    for text in (shown, dashboard):
        assert "<script>alert(1)" not in text and "<img src=x" not in text
    assert set(await asyncio.to_thread(flags, dovecot)) == {1, 2}
    assert all(KEYWORD in f for f in (await asyncio.to_thread(flags, dovecot)).values())


async def page(get: Callable[..., Any], path: str) -> str:
    async with get(path) as response:
        assert response.status == 200, (path, response.status)
        assert response.content_type == "text/html"
        return str(await response.text())


async def ops_session(gw: Gateway) -> str:
    async with gw.client.post("/ops/login", data={"token": OPS_TOKEN},
                              allow_redirects=False) as response:
        assert response.status == 303, response.status
        return "; ".join(f"{k}={v.value}" for k, v in response.cookies.items())
