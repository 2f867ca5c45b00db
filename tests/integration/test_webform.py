"""The web form and the partner API over real HTTP: validation, CSRF, limits, escaping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from config.settings import load_settings
from gateway.app import Role, create_app
from tests.integration.support import PNG, TRACKING_RE, form_data, open_form

MiB = 1024 * 1024


@pytest.fixture
async def client(tmp_path: Path, kafka_env: dict[str, str],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    for key, value in kafka_env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(gateway={"data_dir": str(tmp_path)},
                             connectors={"webform": {"max_file_bytes": MiB, "max_files": 2},
                                         "api": {"keys": {"p": "k"}}})
    app = create_app(settings, frozenset({Role.GATEWAY, Role.SINK}))
    server = TestServer(app, host="127.0.0.1")
    async with TestClient(server, cookie_jar=aiohttp.CookieJar(unsafe=True)) as test_client:
        yield test_client


VALID = {"judul": "Pungli di kantor kelurahan",
         "isi": "Petugas meminta uang Rp50.000 untuk surat pengantar."}


async def _post(client: TestClient, fields: dict[str, str],
                files: list[tuple[str, bytes, str]] | None = None,
                hidden: dict[str, str] | None = None) -> tuple[int, str]:
    hidden = hidden if hidden is not None else await open_form(client.session,
                                                               str(client.make_url("")))
    response = await client.post("/lapor", data=form_data(hidden, fields, files or []))
    return response.status, await response.text()


async def test_form_page_is_indonesian_accessible_and_protected(client: TestClient) -> None:
    response = await client.get("/")
    page = await response.text()
    assert response.status == 200
    assert '<html lang="id">' in page and '<label for="isi">' in page
    assert "lapor_csrf" in response.cookies
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_missing_fields_are_explained_in_indonesian(client: TestClient) -> None:
    status, page = await _post(client, {"judul": "", "isi": "pendek", "kontak": "bukan-kontak",
                                        "tanggal_kejadian": "2999-01-01"})
    assert status == 422
    assert "Judul laporan wajib diisi." in page
    assert "Isi laporan terlalu pendek" in page
    assert "Tulis alamat email atau nomor HP yang benar" in page
    assert "Tanggal kejadian tidak boleh di masa depan." in page
    assert 'value="bukan-kontak"' in page  # what the citizen typed is kept


async def test_csrf_token_is_required(client: TestClient) -> None:
    hidden = await open_form(client.session, str(client.make_url("")))
    status, page = await _post(client, VALID, hidden={**hidden, "csrf_token": "forged.token"})
    assert status == 403 and "Sesi formulir kedaluwarsa" in page
    client.session.cookie_jar.clear()
    status, _ = await _post(client, VALID, hidden=hidden)  # right token, cookie gone
    assert status == 403


async def test_attachments_are_checked(client: TestClient) -> None:
    status, page = await _post(client, VALID, [("virus.jpg", b"MZ\x90\x00" + b"\x00" * 50,
                                                "image/jpeg")])
    assert status == 422 and "Jenis berkas virus.jpg tidak diterima" in page
    status, page = await _post(client, VALID, [(f"f{i}.png", PNG, "image/png")
                                               for i in range(3)])
    assert status == 422 and "Paling banyak 2 berkas." in page
    status, page = await _post(client, VALID, [("besar.png", PNG + b"\x00" * MiB, "image/png")])
    assert status == 400 and "besar.png melebihi batas 1 MB" in page
    status, page = await _post(client, VALID, [("../../etc/passwd.png", PNG, "image/png")])
    assert status == 200 and TRACKING_RE.search(page)


async def test_body_over_the_limit_is_413_before_reading(client: TestClient) -> None:
    response = await client.post("/lapor", data=b"x" * 10,
                                 headers={"Content-Type": "multipart/form-data; boundary=x",
                                          "Content-Length": str(40 * MiB)})
    assert response.status == 413


async def test_citizen_text_is_escaped_everywhere(client: TestClient) -> None:
    evil = '<script>alert("x")</script>'
    status, page = await _post(client, {"judul": evil, "isi": evil + " jalan rusak parah",
                                        "kontak": "x"})
    assert status == 422 and evil not in page and "&lt;script&gt;" in page
    status, page = await _post(client, {"judul": evil, "isi": evil + " jalan rusak parah"})
    assert status == 200
    code = TRACKING_RE.search(page).group(1)  # type: ignore[union-attr]
    status_page = await (await client.get(f"/status/{code}")).text()
    assert evil not in status_page and "&lt;script&gt;" in status_page
    response = await client.get("/status/%3Cscript%3E")
    assert response.status == 404 and "<script>" not in await response.text()


async def test_confidential_complaint_status_shows_no_content(client: TestClient) -> None:
    status, page = await _post(client, {**VALID, "rahasia": "1", "anonim": "1",
                                        "nama": "Rahasia Sekali"})
    code = TRACKING_RE.search(page).group(1)  # type: ignore[union-attr]
    data = await (await client.get(f"/api/v1/complaints/{code}")).json()
    assert data["confidential"] is True and data["title"] is None
    assert "Rahasia Sekali" not in json.dumps(data)
    status_page = await (await client.get(f"/status/{code}")).text()
    assert VALID["judul"] not in status_page and "Rahasia Sekali" not in status_page


async def test_api_answers_are_specific(client: TestClient) -> None:
    auth = {"X-API-Key": "k"}
    assert (await client.post("/api/v1/complaints", json={"body": "x"})).status == 401
    response = await client.post("/api/v1/complaints", data=b"{}", headers=auth)
    assert response.status == 415
    response = await client.post("/api/v1/complaints", data=b"{not json",
                                 headers={**auth, "Content-Type": "application/json"})
    assert response.status == 422
    response = await client.post("/api/v1/complaints", headers=auth, json={
        "body": "Foto terlampir", "attachments": [{"name": "a.png", "data_base64": "!!"}]})
    assert response.status == 422
    assert "attachments.0.data_base64" in (await response.json())["fields"]
    response = await client.post("/api/v1/complaints", headers=auth, json={
        "body": "Banjir setinggi lutut", "incident_date": "2026-02-30"})
    assert response.status == 422 and "incident_date" in (await response.json())["fields"]
    response = await client.get("/api/v1/complaints/not-a-code")
    assert response.status == 404


async def test_metrics_count_intake_outcomes(client: TestClient) -> None:
    auth = {"X-API-Key": "k"}
    for _ in range(2):
        response = await client.post("/api/v1/complaints", headers=auth,
                                     json={"external_id": "m-1", "body": "Jembatan retak."})
        assert response.status == 202
    text = await (await client.get("/metrics")).text()
    assert 'lapor_intake_total{channel="api",outcome="accepted"}' in text
    assert 'lapor_intake_total{channel="api",outcome="duplicate"}' in text
    assert "lapor_outbox_pending" in text


async def test_public_status_masks_contact_details_in_the_title(client: TestClient) -> None:
    status, page = await _post(client, {"judul": "Pungli, hubungi saya 0812-3456-7890",
                                        "isi": "Petugas meminta uang untuk surat pengantar."})
    assert status == 200
    code = TRACKING_RE.search(page).group(1)  # type: ignore[union-attr]
    data = await (await client.get(f"/api/v1/complaints/{code}")).json()
    assert "0812-3456-7890" not in data["title"] and "7890" in data["title"]
    status_page = await (await client.get(f"/status/{code}")).text()
    assert "0812-3456-7890" not in status_page


async def test_undecodable_header_bytes_are_refused_not_crashed(client: TestClient) -> None:
    import asyncio

    reader, writer = await asyncio.open_connection(client.host, client.port)
    body = b'{"body": "Jalan rusak."}'
    writer.write(b"POST /api/v1/complaints HTTP/1.1\r\nHost: x\r\nX-API-Key: \xff\xfe\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] in (b"400", b"401")


async def test_nul_characters_are_stripped_not_fatal(client: TestClient) -> None:
    response = await client.post("/api/v1/complaints", headers={"X-API-Key": "k"}, json={
        "external_id": "nul-1", "body": "Lampu\u0000 padam.", "category": "pju\u0000",
        "reporter": {"email": "a\u0000@b.id", "handle": "@x\u0000"}})
    assert response.status == 202
    code = (await response.json())["tracking_code"]
    data = await (await client.get(f"/api/v1/complaints/{code}")).json()
    assert data["tracking_code"] == code
