"""Hostile input on every route: each gets a specific 4xx (or a dead letter keeping the raw
payload), never a 5xx, and the gateway stays healthy (checked after every test by ``gw``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import aiohttp
import pytest

from tests.emulators.graph import encode, signature, wa_change, wa_message, wa_payload
from tests.emulators.sms import generic_sign
from tests.security.conftest import (
    API_KEY,
    MAX_BODY,
    META_SECRET,
    OPS_TOKEN,
    SMS_SECRET,
    TG_SECRET,
    VERIFY,
    WA_SECRET,
    Gateway,
)
from tests.security.rawhttp import raw_request

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
_HIDDEN = re.compile(r'name="(csrf_token|submission_id)" value="([^"]+)"')
TRACKING = re.compile(r'id="kode-pelacakan">([0-9A-Z]{5}-[0-9A-Z]{5})<')


def wa_body(wamid: str = "wamid.SEC1", text: str = "Jalan berlubang di depan sekolah.") -> bytes:
    return encode(wa_payload([wa_change("1065", messages=[
        wa_message(wamid, "6281234500001", text={"body": text})],
        contacts=[("6281234500001", "Warga")])]))


def tg_body(update_id: int = 501, text: str = "Sampah menumpuk di pasar, mohon diangkut.") -> bytes:
    return json.dumps({"update_id": update_id, "message": {
        "message_id": update_id, "date": 1764400000, "text": text,
        "from": {"id": 777, "is_bot": False, "first_name": "Budi"},
        "chat": {"id": 777, "type": "private", "first_name": "Budi"}}}).encode()


def sms_body(id_: str = "sms-1", text: str = "Air PDAM mati tiga hari di RT 04.") -> bytes:
    return json.dumps({"id": id_, "from": "081234500002", "text": text}).encode()


def meta_body(mid: str = "m_SEC1") -> bytes:
    return encode({"object": "page", "entry": [{"id": "PAGE1", "time": 1764400000000,
                   "messaging": [{"sender": {"id": "PSID9"}, "recipient": {"id": "PAGE1"},
                                  "timestamp": 1764400000000,
                                  "message": {"mid": mid, "text": "Lampu lalu lintas mati."}}]}]})


# route, signing header, how to sign a body, a valid body
WEBHOOKS: dict[str, tuple[str, str, Any, bytes]] = {
    "whatsapp": ("/webhooks/whatsapp", "X-Hub-Signature-256",
                 lambda b: signature(WA_SECRET, b), wa_body()),
    "meta": ("/webhooks/meta", "X-Hub-Signature-256", lambda b: signature(META_SECRET, b),
             meta_body()),
    "sms": ("/webhooks/sms/generic", "X-Lapor-Signature", lambda b: generic_sign(SMS_SECRET, b),
            sms_body()),
    "telegram": ("/webhooks/telegram", "X-Telegram-Bot-Api-Secret-Token", lambda b: TG_SECRET,
                 tg_body()),
}


async def post(gw: Gateway, path: str, body: bytes, headers: dict[str, str] | None = None
               ) -> tuple[int, str]:
    async with gw.client.post(path, data=body, headers={
            "Content-Type": "application/json", **(headers or {})}) as response:
        return response.status, await response.text()


async def outbox_count(gw: Gateway) -> int:
    return int((await gw.rows("SELECT count(*) FROM outbox"))[0][0])


async def dead_letters(gw: Gateway) -> list[tuple[Any, ...]]:
    return await gw.rows("SELECT channel, reason, payload FROM dead_letters")


# --------------------------------------------------------------------------- signatures


@pytest.mark.parametrize("channel", sorted(WEBHOOKS))
async def test_webhook_signatures_missing_wrong_truncated_or_for_another_body(
        gw: Gateway, channel: str) -> None:
    path, header, sign, body = WEBHOOKS[channel]
    good = sign(body)
    forged = {
        "missing": {},
        "empty": {header: ""},
        "wrong": {header: sign(b"another body") if channel != "telegram" else "nope"},
        "truncated": {header: good[: len(good) // 2]},
        "extended": {header: good + "00"},
        "case-mangled scheme": {header: good.upper()} if channel != "telegram" else
        {header: TG_SECRET.upper()},
    }
    for case, headers in forged.items():
        status, text = await post(gw, path, body, headers)
        assert status in (401, 403), (channel, case, status, text)
    # Signed for one body, sent with another (a tampered payload): refused too.
    if channel != "telegram":
        status, _ = await post(gw, path, body + b" ", {header: good})
        assert status in (401, 403)
    assert await outbox_count(gw) == 0
    # Undecodable header bytes straight on the wire.
    status, _ = await raw_request(gw.port, (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n").encode() + header.encode() + b": \xff\xfe\x80",
        body)
    assert status in (400, 401, 403)


@pytest.mark.parametrize("channel", sorted(WEBHOOKS))
async def test_replayed_signed_webhook_is_one_complaint(gw: Gateway, channel: str) -> None:
    path, header, sign, body = WEBHOOKS[channel]
    for _ in range(3):  # a captured, validly signed request replayed
        status, text = await post(gw, path, body, {header: sign(body)})
        assert status == 200, (status, text)
    await gw.handled()  # WhatsApp/Meta answer once the body is kept, and parse it after
    assert await outbox_count(gw) == 1


async def test_meta_handshake_refuses_wrong_and_undecodable_tokens(gw: Gateway) -> None:
    for path in ("/webhooks/whatsapp", "/webhooks/meta"):
        for token in ("wrong", "", VERIFY[:-1], "%FF%FE", "%C3%28"):
            status, _ = await raw_request(gw.port, (
                f"GET {path}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=42 "
                "HTTP/1.1\r\nHost: x\r\n").encode())
            assert status == 403, (path, token, status)
        async with gw.client.get(path, params={"hub.mode": "subscribe",
                                               "hub.verify_token": VERIFY,
                                               "hub.challenge": "<script>1</script>"}) as r:
            assert r.status == 200 and r.content_type == "text/plain"


# --------------------------------------------------------------------------- sizes


ROUTES_WITH_BODIES = ["/lapor", "/api/v1/complaints", "/webhooks/whatsapp", "/webhooks/meta",
                      "/webhooks/telegram", "/webhooks/sms/generic"]


@pytest.mark.parametrize("path", ROUTES_WITH_BODIES)
async def test_over_the_limit_is_413_before_the_body_is_read(gw: Gateway, path: str) -> None:
    """Content-Length far over the limit and no body sent at all: the answer comes at once
    (a server that tried to read the body would wait for it)."""
    status, answer = await raw_request(gw.port, (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {API_KEY}\r\n{WEBHOOKS['telegram'][1]}: {TG_SECRET}\r\n"
        f"Content-Length: {50 * MAX_BODY}\r\n").encode(), within=3)
    assert status == 413, answer[:300]


@pytest.mark.parametrize("path", ROUTES_WITH_BODIES)
async def test_chunked_body_over_the_limit_is_413(gw: Gateway, path: str) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(2 * MAX_BODY // 65536 + 2):
            yield b"x" * 65536

    async with gw.client.post(path, data=chunks(), headers={
            "Content-Type": "application/json", "X-API-Key": API_KEY,
            WEBHOOKS["telegram"][1]: TG_SECRET}) as response:
        # 403: refused as unsigned first; 415: the form refuses JSON first
        assert response.status in (403, 413, 415), response.status


async def test_huge_and_many_headers_are_refused_with_4xx(gw: Gateway) -> None:
    status, _ = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
                                  + b"a" * 100_000)
    assert 400 <= status < 500
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    status, _ = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many)
    assert 400 <= status < 500


# --------------------------------------------------------------------------- hostile bodies

NESTED = b"[" * 10_000 + b"]" * 10_000  # far deeper than any parser's recursion limit
NESTED_OBJ = b"{\"a\":" * 5_000 + b"1" + b"}" * 5_000
HOSTILE_BODIES = {
    "deeply nested array": NESTED,
    "deeply nested object": NESTED_OBJ,
    "invalid json": b'{"object": "whatsapp_business_account", "entry": [',
    "invalid utf-8": b'{"update_id": 9, "text": "\xff\xfe\xc3\x28"}',
    "nul bytes": b'{"a": "\x00\x00"}\x00',
    "json scalar": b"12345",
    "empty": b"",
}


@pytest.mark.parametrize("channel", sorted(WEBHOOKS))
async def test_signed_garbage_is_a_dead_letter_with_the_raw_bytes(gw: Gateway,
                                                                  channel: str) -> None:
    """Authenticated but unusable: kept for an operator, answered without a 5xx."""
    path, header, sign, _ = WEBHOOKS[channel]
    for case, body in HOSTILE_BODIES.items():
        status, text = await post(gw, path, body, {header: sign(body)})
        assert status < 500 and status != 413, (channel, case, status, text)
    await gw.handled()
    kept = {bytes(row[2]) for row in await dead_letters(gw)}
    for case in ("invalid json", "invalid utf-8", "deeply nested array"):
        assert HOSTILE_BODIES[case] in kept, (channel, case)  # the raw bytes, for an operator
    assert await outbox_count(gw) == 0


async def test_api_rejects_hostile_json_with_specific_4xx(gw: Gateway) -> None:
    headers = {"X-API-Key": API_KEY}
    for case, body in HOSTILE_BODIES.items():
        status, text = await post(gw, "/api/v1/complaints", body, headers)
        assert status == 422, (case, status, text)
    status, _ = await post(gw, "/api/v1/complaints", b"{}", {**headers,
                                                            "Content-Type": "text/plain"})
    assert status == 415
    nul = json.dumps({"external_id": "nul\u0000id", "body": "Jalan\u0000 rusak parah sekali.",
                      "title": "\u0000\u202e\u200b", "reporter": {"name": "A\u0000B"}}).encode()
    status, text = await post(gw, "/api/v1/complaints", nul, headers)
    assert status == 202, text
    for bad in ({"body": "x" * 20001}, {"body": "ok ok ok ok", "unknown": 1},
                {"body": "ok ok ok ok", "attachments": [{"name": "a.png",
                                                         "data_base64": "!!!"}]},
                {"body": "ok ok ok ok", "location": {"lat": 1e308, "lon": "x"}},
                {"body": "ok ok ok ok", "incident_date": "2026-13-45"}):
        status, text = await post(gw, "/api/v1/complaints", json.dumps(bad).encode(), headers)
        assert status == 422, (bad, status, text)


# --------------------------------------------------------------------------- web form


async def open_form(gw: Gateway) -> tuple[dict[str, str], str]:
    """GET the form; its hidden fields and the CSRF cookie (sent back by hand: the cookie is
    Secure since public_url is https, and the test talks plain HTTP)."""
    async with gw.client.get("/") as response:
        assert response.status == 200
        cookie = response.cookies["lapor_csrf"].value
        return dict(_HIDDEN.findall(await response.text())), cookie


def form(fields: dict[str, str], files: list[tuple[str, bytes, str]] = ()) -> aiohttp.FormData:  # type: ignore[assignment]
    data = aiohttp.FormData()
    for key, value in fields.items():
        data.add_field(key, value)
    for name, content, ctype in files:
        data.add_field("lampiran", content, filename=name, content_type=ctype)
    return data


XSS = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


async def test_form_csrf_missing_forged_or_foreign_cookie_is_403(gw: Gateway) -> None:
    hidden, cookie = await open_form(gw)
    fields = {"judul": "Pungli", "isi": "Petugas meminta uang untuk surat pengantar."}
    cases = {
        "no token": ({**fields, "submission_id": hidden["submission_id"]}, cookie),
        "forged token": ({**hidden, **fields, "csrf_token": "1.abc.def"}, cookie),
        "no cookie": ({**hidden, **fields}, None),
        "another cookie": ({**hidden, **fields}, "1764400000.someoneelse"),
    }
    for case, (data, jar) in cases.items():
        headers = {"Cookie": f"lapor_csrf={jar}"} if jar else {}
        async with gw.client.post("/lapor", data=form(data), headers=headers) as response:
            assert response.status == 403, (case, response.status)
    # Undecodable bytes in the token and the cookie, straight on the wire.
    body = (f"submission_id={hidden['submission_id']}&judul=Pungli&isi=Petugas+meminta+uang"
            "+untuk+surat&csrf_token=%FF%FE%80").encode()
    status, _ = await raw_request(gw.port, (
        "POST /lapor HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
        f"\r\nContent-Length: {len(body)}\r\n").encode() + b"Cookie: lapor_csrf=\xff\xfe", body)
    assert status in (400, 403)
    assert await outbox_count(gw) == 0


async def test_xss_in_every_citizen_field_is_escaped_on_every_page(gw: Gateway) -> None:
    hidden, cookie = await open_form(gw)
    fields = {"judul": XSS, "isi": f"Isi laporan {XSS} panjang.", "lokasi": XSS,
              "instansi": XSS, "nama": XSS, "kontak": XSS}
    headers = {"Cookie": f"lapor_csrf={cookie}"}
    async with gw.client.post("/lapor", data=form({**hidden, **fields}),
                              headers=headers) as response:
        page = await response.text()
        assert response.status in (200, 422)
        assert "<script>alert(1)" not in page and "<img src=x" not in page
    if response.status == 422:  # the contact was refused: fix it and send again (echoed back)
        hidden, cookie = await open_form(gw)
        fields["kontak"] = "warga@example.org"
        async with gw.client.post("/lapor", data=form({**hidden, **fields}),
                                  headers={"Cookie": f"lapor_csrf={cookie}"}) as response:
            page = await response.text()
            assert response.status == 200, page
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    code = TRACKING.search(page)
    assert code is not None, page
    for path in (f"/status/{code.group(1)}", f"/api/v1/complaints/{code.group(1)}",
                 f"/status/{XSS}", "/status?kode=" + XSS):
        async with gw.client.get(path) as response:
            text = await response.text()
            assert response.status in (200, 303, 404), (path, response.status)
            if response.content_type == "application/json":  # data, never rendered (nosniff)
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                continue
            assert "<script>alert(1)" not in text and "<img src=x" not in text, path
    async with gw.client.get("/ops/api/dead-letters",
                             headers={"Authorization": f"Bearer {OPS_TOKEN}"}) as response:
        assert response.content_type == "application/json"  # never rendered as HTML


async def test_attachment_names_cannot_traverse_paths(gw: Gateway) -> None:
    names = ["../../../../etc/passwd.png", "..\\..\\windows\\win.ini.png", "/etc/shadow.png",
             "a/../../b.png", "....//....//x.png", "%2e%2e%2fx.png", "\u0000evil.png"]
    hidden, cookie = await open_form(gw)
    async with gw.client.post("/lapor", data=form(
            {**hidden, "judul": "Banjir", "isi": "Banjir setinggi lutut di Jl. Pramuka."},
            [(name, PNG + name.encode(), "image/png") for name in names[:5]]),
            headers={"Cookie": f"lapor_csrf={cookie}"}) as response:
        assert response.status == 200, await response.text()
    body = {"external_id": "trav", "body": "Banjir di Jl. Pramuka setinggi lutut.",
            "attachments": [{"name": n, "content_type": "image/png",
                             "data_base64": base64.b64encode(PNG + n.encode()).decode()}
                            for n in names[-5:]]}
    status, text = await post(gw, "/api/v1/complaints", json.dumps(body).encode(),
                              {"X-API-Key": API_KEY})
    assert status == 202, text
    stored = [p for p in (gw.data_dir / "attachments").rglob("*") if p.is_file()]
    assert stored and all(p.resolve().is_relative_to(gw.data_dir.resolve()) for p in stored)
    assert all(re.fullmatch(r"[0-9a-f]{64}", p.name) for p in stored)
    for row in await gw.rows("SELECT payload FROM outbox"):
        for attachment in json.loads(row[0])["attachments"]:
            assert "/" not in attachment["name"] and "\\" not in attachment["name"]
            assert ".." not in attachment["name"] and "\x00" not in attachment["name"]


async def test_attachment_type_and_size_allow_lists(gw: Gateway) -> None:
    hidden, cookie = await open_form(gw)
    for name, content in (("virus.exe", b"MZ\x90\x00" + b"\x00" * 64),
                          ("page.html", b"<html><script>alert(1)</script></html>"),
                          ("fake.png", b"MZ\x90\x00" + b"\x00" * 64),
                          ("big.png", PNG + b"\x00" * (70 * 1024))):
        hidden, cookie = await open_form(gw)
        async with gw.client.post("/lapor", data=form(
                {**hidden, "judul": "Banjir", "isi": "Banjir setinggi lutut di Jl. Pramuka."},
                [(name, content, "image/png")]),
                headers={"Cookie": f"lapor_csrf={cookie}"}) as response:
            assert response.status in (400, 413, 422), (name, response.status)
    assert await outbox_count(gw) == 0


async def test_multipart_bombs_and_malformed_multipart(gw: Gateway) -> None:
    hidden, cookie = await open_form(gw)
    many = aiohttp.FormData()
    for key, value in hidden.items():
        many.add_field(key, value)
    for i in range(5000):
        many.add_field(f"f{i}", "x")
    async with gw.client.post("/lapor", data=many,
                              headers={"Cookie": f"lapor_csrf={cookie}"}) as response:
        assert 400 <= response.status < 500, response.status
    for body, ctype in ((b"--b\r\nContent-Disposition: form-data; name=\"klasifikasi\"\r\n\r\n"
                         b"evil\r\n--b--\r\n", "multipart/form-data; boundary=b"),
                        (b"--b\r\nContent-Disposition: form-data; name=\"isi\"\r\n\r\nxx",
                         "multipart/form-data; boundary=b"),
                        (b"garbage", "multipart/form-data"),
                        (b"garbage", "multipart/form-data; boundary="),
                        (b"%ZZ=%%%&isi=\xff\xfe", "application/x-www-form-urlencoded")):
        async with gw.client.post("/lapor", data=body, headers={
                "Content-Type": ctype, "Cookie": f"lapor_csrf={cookie}"}) as response:
            assert 400 <= response.status < 500, (body, ctype, response.status)


# --------------------------------------------------------------------------- lookups


INJECTIONS = ["' OR '1'='1", "'; DROP TABLE outbox; --", "1 UNION SELECT payload FROM outbox",
              "%27%20OR%201%3D1--", "\\x00", "ABCDE-FGHJK' --", "%00", "%FF%FE", "..%2F..%2F"]


async def test_sql_injection_in_every_lookup_finds_nothing_and_breaks_nothing(
        gw: Gateway) -> None:
    status, _ = await post(gw, "/api/v1/complaints", json.dumps(
        {"external_id": "'; DROP TABLE outbox; --", "body": "Laporan dengan id berbahaya.",
         "title": "' OR 1=1 --"}).encode(), {"X-API-Key": API_KEY})
    assert status == 202
    for value in INJECTIONS:
        for path in (f"/status/{value}", f"/api/v1/complaints/{value}", f"/status?kode={value}"):
            status, answer = await raw_request(gw.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                                               .encode())
            assert status in (303, 400, 404), (path, status, answer[:200])
        status, _ = await raw_request(gw.port, (
            f"POST /ops/api/connectors/{value}/pause HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {OPS_TOKEN}\r\nContent-Length: 0\r\n").encode())
        assert status in (400, 404), (value, status)
    assert await outbox_count(gw) == 1  # the table is still there, with its one row


# --------------------------------------------------------------------------- ops


async def test_ops_api_without_or_with_a_wrong_token_is_401(gw: Gateway) -> None:
    routes = [("GET", "/ops/api/connectors"), ("GET", "/ops/api/dead-letters"),
              ("POST", "/ops/api/connectors/webform/pause"),
              ("POST", "/ops/api/connectors/webform/resume")]
    wrong = [{}, {"Authorization": "Bearer "}, {"Authorization": "Bearer wrong"},
             {"Authorization": f"Bearer {OPS_TOKEN[:-1]}"},
             {"Authorization": f"Basic {OPS_TOKEN}"}, {"Authorization": OPS_TOKEN},
             {"X-Ops-Token": OPS_TOKEN}]
    for method, path in routes:
        for headers in wrong:
            async with gw.client.request(method, path, headers=headers) as response:
                assert response.status == 401, (method, path, headers, response.status)
        async with gw.client.request(method, f"{path}?token={OPS_TOKEN}") as response:
            assert response.status == 401
        status, _ = await raw_request(gw.port, (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            "Authorization: Bearer \xff\xfe\x80").encode("latin-1"))
        assert status in (400, 401)
    async with gw.client.get("/ops/api/connectors",
                             headers={"Authorization": f"Bearer {OPS_TOKEN}"}) as response:
        assert response.status == 200
    async with gw.client.get("/webform") as response:  # still accepting: nothing was paused
        assert response.status == 404


# --------------------------------------------------------------------------- headers

SECURITY_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy",
                    "Content-Security-Policy", "Strict-Transport-Security")


async def test_security_headers_on_every_answer(gw: Gateway) -> None:
    requests = [("GET", "/", {}), ("GET", "/status", {}), ("GET", "/status/AAAAA-AAAAA", {}),
                ("GET", "/nowhere", {}), ("DELETE", "/lapor", {}), ("GET", "/healthz", {}),
                ("GET", "/metrics", {}), ("GET", "/ops/api/connectors", {}),
                ("POST", "/api/v1/complaints", {}),
                ("POST", "/webhooks/whatsapp", {"Content-Length": str(10 * MAX_BODY)})]
    for method, path, headers in requests:
        if "Content-Length" in headers:
            length = headers["Content-Length"]
            status, answer = await raw_request(gw.port, (
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            ).encode())
            text = answer.decode("latin-1").lower()
            for name in SECURITY_HEADERS:
                assert name.lower() + ":" in text, (path, status, name)
            continue
        async with gw.client.request(method, path, headers=headers) as response:
            for name in SECURITY_HEADERS:
                assert name in response.headers, (method, path, response.status, name)
            assert "script-src 'none'" in response.headers["Content-Security-Policy"]


def test_secret_compares_are_constant_time() -> None:
    """No secret, token or signature compared with ``==`` in the code that checks them."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    pattern = re.compile(r"(secret|token|signature|api_key|digest|password)\w*\s*[!=]=\s*\w",
                         re.IGNORECASE)
    offenders = []
    for folder in ("connectors", "gateway", "forwarder"):
        for path in (root / folder).glob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and "is None" not in line and "compare_digest" not in line:
                    offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders
    hmac.compare_digest(b"a", b"a")  # the primitive the code uses instead
    assert hashlib.sha256  # and signatures are HMAC-SHA256 digests compared with it
