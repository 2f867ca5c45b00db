"""MIME parsing of real-looking complaint mail: encodings, charsets, HTML, attachments, forwards,
and the machine mail that is not a complaint. ``CORPUS`` is reused by the Dovecot tests."""

from __future__ import annotations

import base64
import quopri

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.email_mime import decode_bytes, decode_header, parse_mail

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 300
OURS = "lapor@kaltimprov.go.id"


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def plain() -> bytes:
    return _crlf(
        "From: Budi Santoso <budi.santoso@example.id>\n"
        f"To: {OURS}\n"
        "Subject: Jalan berlubang di Jl. Juanda\n"
        "Date: Mon, 02 Nov 2026 08:15:00 +0800\n"
        "Message-ID: <plain-1@mail.example.id>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\n"
        "Selamat pagi,\n\nJalan di depan SDN 012 Samarinda berlubang besar, sudah dua minggu.\n"
        "Mohon segera diperbaiki.\n\n"
        "Pada Sen, 2 Nov 2026 pukul 07.00, Admin <admin@example.id> menulis:\n"
        "> pesan lama\n> yang dikutip\n\n"
        "-- \nBudi Santoso\nRT 05 Sungai Pinang\n")


def quoted_printable() -> bytes:
    body = ("Lampu jalan di Jl. M. Yamin mati total sejak Jumat — gelap sekali.\n\n"
            "On Mon, 2 Nov 2026 at 10:00, LAPOR Kaltim <lapor@kaltimprov.go.id>\n"
            "wrote:\n> Terima kasih\n\nSent from my iPhone\n")
    encoded = quopri.encodestring(body.encode("utf-8")).decode("ascii")
    return _crlf(
        "From: siti@example.id\nSubject: Lampu jalan mati\n"
        "Message-ID: <qp-1@example.id>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=\"UTF-8\"\n"
        "Content-Transfer-Encoding: quoted-printable\n\n" + encoded)


def base64_body() -> bytes:
    body = base64.encodebytes(b"Sampah menumpuk di pasar Segiri, bau sampai ke rumah warga."
).decode("ascii")
    return _crlf(
        "From: Andi <andi@example.id>\nSubject: Sampah pasar\n"
        "Message-ID: <b64-1@example.id>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + body)


def html_only() -> bytes:
    html = ("<html><head><style>p{color:red}</style></head><body>"
            "<p>Air PDAM&nbsp;tidak mengalir di Perumahan Bumi Sempaja &amp; sekitarnya.</p>"
            "<ul><li>Blok A</li><li>Blok C</li></ul><br>"
            "<div class=\"gmail_quote\">Pada Sen, 2 Nov 2026 menulis:<blockquote>lama"
            "</blockquote></div><script>alert(1)</script></body></html>")
    return _crlf(
        "From: rina@example.id\nSubject: Air mati\nMessage-ID: <html-1@example.id>\n"
        "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n" + html)


def windows_1252() -> bytes:
    head = ("From: =?windows-1252?Q?Jos=E9_Mar=EDa?= <jose@example.id>\n"
            "Subject: =?windows-1252?Q?Caf=E9_ilegal_=96_parkir?=\n"
            "Message-ID: <cp1252-1@example.id>\nMIME-Version: 1.0\n"
            # mislabeled: the body is windows-1252 (0x96 en dash, 0x93/0x94 quotes)
            "Content-Type: text/plain; charset=iso-8859-1\n"
            "Content-Transfer-Encoding: 8bit\n\n")
    return head.replace("\n", "\r\n").encode("ascii") + \
        "Parkir liar di depan caf\xe9 \x93Kopi\x94 \x96 macet tiap malam.\r\n".encode("latin-1")


def utf8_labelled_latin1() -> bytes:
    return ("From: dewi@example.id\r\nSubject: Trotoar\r\nMessage-ID: <mis-1@example.id>\r\n"
            "Content-Type: text/plain; charset=iso-8859-1\r\n\r\n"
            "Trotoar rusak di Jl. Pahlawan, pejalan kaki terpaksa ke badan jalan — bahaya.\r\n"
            ).encode()


def encoded_subject() -> bytes:
    return _crlf(
        "From: =?UTF-8?B?V2F5YW4gU3VyeWFkaQ==?= <wayan@example.id>\n"
        "Subject: =?UTF-8?B?SmVtYmF0YW4gcmV0YWs=?= =?ISO-8859-1?Q?_di_K=F6nig_street?=\n"
        "Message-ID: <ew-1@example.id>\nContent-Type: text/plain; charset=utf-8\n\n"
        "Jembatan kayu retak, anak sekolah melintas setiap hari.\n")


def with_attachments() -> bytes:
    jpeg = base64.encodebytes(JPEG).decode("ascii")
    png = base64.encodebytes(PNG).decode("ascii")
    exe = base64.encodebytes(b"MZ\x90\x00" + b"\x00" * 100).decode("ascii")
    return _crlf(
        "From: Hasan <hasan@example.id>\nSubject: Banjir di Jl. Antasari\n"
        "Message-ID: <att-1@example.id>\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"OUTER\"\n\n"
        "--OUTER\nContent-Type: multipart/alternative; boundary=\"ALT\"\n\n"
        "--ALT\nContent-Type: text/plain; charset=utf-8\n\n"
        "Banjir setinggi lutut setiap hujan, foto terlampir.\n"
        "--ALT\nContent-Type: multipart/related; boundary=\"REL\"\n\n"
        "--REL\nContent-Type: text/html; charset=utf-8\n\n"
        "<p>Banjir setinggi lutut setiap hujan, foto terlampir.<img src=\"cid:peta\"></p>\n"
        "--REL\nContent-Type: image/png\nContent-ID: <peta>\n"
        "Content-Disposition: inline\nContent-Transfer-Encoding: base64\n\n" + png +
        "--REL--\n--ALT--\n"
        "--OUTER\nContent-Type: image/jpeg; name=\"=?UTF-8?Q?banjir_jalan.jpg?=\"\n"
        "Content-Disposition: attachment; filename*=UTF-8''banjir%20jalan.jpg\n"
        "Content-Transfer-Encoding: base64\n\n" + jpeg +
        "--OUTER\nContent-Type: application/octet-stream; name=\"foto.jpg.exe\"\n"
        "Content-Disposition: attachment; filename=\"foto.jpg.exe\"\n"
        "Content-Transfer-Encoding: base64\n\n" + exe + "--OUTER--\n")


def forwarded() -> bytes:
    jpeg = base64.encodebytes(JPEG).decode("ascii")
    return _crlf(
        "From: Kelurahan Air Hitam <kel.airhitam@samarindakota.go.id>\n"
        "Subject: Fwd: Keluhan warga soal drainase\n"
        "Message-ID: <fwd-1@samarindakota.go.id>\nMIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"F\"\n\n"
        "--F\nContent-Type: text/plain; charset=utf-8\n\nMohon ditindaklanjuti.\n"
        "--F\nContent-Type: message/rfc822\n\n"
        "From: Warga <warga@example.id>\nSubject: Drainase tersumbat\n"
        "Date: Sun, 01 Nov 2026 19:00:00 +0800\nMessage-ID: <inner-1@example.id>\n"
        "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"I\"\n\n"
        "--I\nContent-Type: text/plain; charset=utf-8\n\n"
        "Drainase di Gg. Mawar tersumbat, air masuk ke rumah.\n"
        "--I\nContent-Type: image/jpeg; name=\"got.jpg\"\n"
        "Content-Disposition: attachment; filename=\"got.jpg\"\n"
        "Content-Transfer-Encoding: base64\n\n" + jpeg + "--I--\n"
        "--F--\n")


def reply_to_ack(code: str, complaint: str) -> bytes:
    return _crlf(
        f"From: Budi Santoso <budi.santoso@example.id>\nTo: {OURS}\n"
        f"Subject: Re: Jalan berlubang di Jl. Juanda [{code}]\n"
        "Message-ID: <reply-1@mail.example.id>\n"
        f"In-Reply-To: <{code}.{complaint}@kaltimprov.go.id>\n"
        f"References: <plain-1@mail.example.id> <{code}.{complaint}@kaltimprov.go.id>\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
        "Tambahan: lubangnya sekarang makin lebar, sudah ada motor jatuh.\n\n"
        f"Pada Sen, 2 Nov 2026, LAPOR <{OURS}> menulis:\n"
        f"> Terima kasih, laporan Anda sudah kami terima. Kode pelacakan: {code}.\n")


def auto_reply() -> bytes:
    return _crlf(
        "From: pak.kadis@example.go.id\nSubject: Out of Office: Laporan\n"
        "Auto-Submitted: auto-replied\nMessage-ID: <ooo-1@example.go.id>\n"
        "Content-Type: text/plain\n\nSaya sedang cuti sampai 10 November.\n")


def bounce() -> bytes:
    return _crlf(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.id>\n"
        "Subject: Undelivered Mail Returned to Sender\nMessage-ID: <dsn-1@mx.example.id>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
        "--B\nContent-Type: text/plain\n\nThis is the mail system.\n"
        "--B\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.id\n\nFinal-Recipient: rfc822; nobody@example.id\n"
        "Action: failed\nStatus: 5.1.1\n--B--\n")


def mailing_list() -> bytes:
    return _crlf(
        "From: Buletin <buletin@news.example.id>\nSubject: Buletin mingguan\n"
        "List-Id: Buletin Warga <buletin.news.example.id>\nPrecedence: list\n"
        "Message-ID: <list-1@news.example.id>\nContent-Type: text/plain\n\nBerita minggu ini.\n")


def no_message_id() -> bytes:
    return _crlf("From: tanpa.id@example.id\nSubject: Pohon tumbang\n"
                 "Content-Type: text/plain\n\nPohon tumbang menutup jalan di Jl. Wahid Hasyim.\n")


#: Messages that must each become exactly one complaint (name, bytes, words it must contain).
COMPLAINTS: list[tuple[str, bytes, str]] = [
    ("plain", plain(), "SDN 012 Samarinda berlubang"),
    ("quoted-printable", quoted_printable(), "mati total sejak Jumat — gelap"),
    ("base64", base64_body(), "Sampah menumpuk di pasar Segiri"),
    ("html-only", html_only(), "Air PDAM tidak mengalir di Perumahan Bumi Sempaja & sekitarnya"),
    ("windows-1252", windows_1252(), "caf\xe9 \u201cKopi\u201d \u2013 macet"),
    ("utf-8 labelled latin-1", utf8_labelled_latin1(), "badan jalan — bahaya"),
    ("encoded-word subject", encoded_subject(), "Jembatan kayu retak"),
    ("attachments", with_attachments(), "Banjir setinggi lutut"),
    ("forward", forwarded(), "Drainase di Gg. Mawar tersumbat"),
    ("no message-id", no_message_id(), "Pohon tumbang menutup jalan"),
]
#: Machine mail: recorded, never a complaint.
NOT_COMPLAINTS: list[tuple[str, bytes]] = [
    ("auto-reply", auto_reply()), ("bounce", bounce()), ("mailing list", mailing_list())]


def parse(raw: bytes, **limits: int):  # type: ignore[no-untyped-def]
    return parse_mail(raw, max_attachment_bytes=limits.get("max_bytes", 1_000_000),
                      max_attachments=limits.get("max_count", 10))


@pytest.mark.parametrize(("name", "raw", "words"), COMPLAINTS, ids=[c[0] for c in COMPLAINTS])
def test_every_complaint_reads_as_the_citizens_words(name: str, raw: bytes, words: str) -> None:
    mail = parse(raw)
    assert mail.automatic is None
    assert words in mail.text
    assert "\ufffd" not in mail.text + mail.subject
    assert mail.from_address and "@" in mail.from_address


def test_quoted_reply_signature_and_footer_are_removed() -> None:
    mail = parse(plain())
    assert mail.text == ("Selamat pagi,\n\nJalan di depan SDN 012 Samarinda berlubang besar, "
                         "sudah dua minggu.\nMohon segera diperbaiki.")
    qp = parse(quoted_printable())
    assert qp.text == "Lampu jalan di Jl. M. Yamin mati total sejak Jumat — gelap sekali."


def test_headers_are_decoded() -> None:
    mail = parse(plain())
    assert mail.message_id == "plain-1@mail.example.id"
    assert mail.from_name == "Budi Santoso" and mail.from_address == "budi.santoso@example.id"
    assert mail.date is not None and mail.date.utcoffset() is not None
    assert parse(encoded_subject()).subject == "Jembatan retak di König street"
    assert parse(encoded_subject()).from_name == "Wayan Suryadi"
    cp = parse(windows_1252())
    assert cp.subject == "Café ilegal – parkir" and cp.from_name == "José María"


def test_an_encoded_display_name_with_a_comma_stays_one_name() -> None:
    raw = _crlf("From: =?utf-8?q?Santoso=2C_Budi?= <budi@example.id>\nSubject: x\n\nteks\n")
    mail = parse(raw)
    assert (mail.from_name, mail.from_address) == ("Santoso, Budi", "budi@example.id")


def test_html_only_becomes_clean_text_without_the_quote() -> None:
    text = parse(html_only()).text
    assert text == ("Air PDAM tidak mengalir di Perumahan Bumi Sempaja & sekitarnya.\n"
                    "- Blok A\n- Blok C")


def test_plain_is_preferred_and_attachments_and_inline_images_are_kept() -> None:
    mail = parse(with_attachments())
    assert mail.text == "Banjir setinggi lutut setiap hujan, foto terlampir."
    parts = {part.name: part for part in mail.attachments}
    assert set(parts) == {"lampiran-1.png", "banjir jalan.jpg", "foto.jpg.exe"}
    assert parts["banjir jalan.jpg"].data == JPEG and not parts["banjir jalan.jpg"].inline
    assert parts["lampiran-1.png"].inline and parts["lampiran-1.png"].data == PNG


def test_attachment_limits_skip_but_keep_the_text() -> None:
    mail = parse(with_attachments(), max_bytes=500, max_count=10)
    assert [p.name for p in mail.attachments] == ["lampiran-1.png", "foto.jpg.exe"]
    assert mail.skipped == ("banjir jalan.jpg",)
    one = parse(with_attachments(), max_count=1)
    assert len(one.attachments) == 1 and len(one.skipped) == 2


def test_forwarded_message_keeps_its_words_sender_and_attachment() -> None:
    mail = parse(forwarded())
    assert mail.text.startswith("Mohon ditindaklanjuti.\n\n---------- Pesan diteruskan")
    assert "Dari: Warga <warga@example.id>" in mail.text
    assert "Subjek: Drainase tersumbat" in mail.text
    assert [p.name for p in mail.attachments] == ["got.jpg"]


def test_reply_to_our_acknowledgement_names_it() -> None:
    mail = parse(reply_to_ack("K7M2Q-9XD4T", "a" * 32))
    assert mail.in_reply_to == (f"k7m2q-9xd4t.{'a' * 32}@kaltimprov.go.id",)
    assert mail.text == "Tambahan: lubangnya sekarang makin lebar, sudah ada motor jatuh."


@pytest.mark.parametrize(("name", "raw"), NOT_COMPLAINTS, ids=[c[0] for c in NOT_COMPLAINTS])
def test_machine_mail_is_recognised(name: str, raw: bytes) -> None:
    assert parse(raw).automatic is not None


@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-generated", "Precedence: bulk", "X-Autoreply: yes",
    "List-Unsubscribe: <mailto:x@y.id>", "X-Auto-Response-Suppress: OOF"])
def test_each_automatic_header_is_recognised(header: str) -> None:
    raw = _crlf(f"From: a@b.id\nSubject: x\n{header}\n\nteks\n")
    assert parse(raw).automatic is not None


def test_auto_submitted_no_is_a_person() -> None:
    raw = _crlf("From: a@b.id\nSubject: x\nAuto-Submitted: no\n\nteks\n")
    assert parse(raw).automatic is None


@pytest.mark.parametrize(("data", "label", "text"), [
    ("héllo".encode(), "iso-8859-1", "héllo"),
    ("h\xe9llo \u2013".encode("cp1252"), "utf-8", "héllo –"),
    ("h\xe9llo".encode("latin-1"), None, "héllo"),
    ("héllo".encode(), "x-unknown-charset", "héllo"),
    ("日本".encode("shift_jis"), "shift_jis", "日本"),
    (b"plain", "us-ascii", "plain"),
])
def test_charsets_including_wrong_labels(data: bytes, label: str | None, text: str) -> None:
    assert decode_bytes(data, label) == text


def test_raw_8bit_and_broken_headers_never_raise() -> None:
    assert decode_header("=?utf-8?B?broken") == "=?utf-8?B?broken"
    assert decode_header(None) == ""
    raw = b"From: \xff\xfe <<@>>\r\nSubject: =?bogus?Q?x?=\r\nDate: yesterday\r\n\r\n\xff\r\n"
    mail = parse(raw)
    assert mail.date is None and mail.from_address is None
    assert mail.subject == "x"


def test_only_plain_and_html_parts_are_body_text() -> None:
    raw = _crlf("From: a@b.id\nSubject: Undangan\nMIME-Version: 1.0\n"
                "Content-Type: multipart/mixed; boundary=\"M\"\n\n"
                "--M\nContent-Type: text/plain\n\nRapat warga soal banjir.\n"
                "--M\nContent-Type: text/calendar; method=REQUEST\n\nBEGIN:VCALENDAR\n"
                "--M\nContent-Type: text/plain\nContent-Disposition: attachment; "
                "filename=\"catatan.txt\"\n\nisi lampiran\n--M--\n")
    mail = parse(raw)
    assert mail.text == "Rapat warga soal banjir."
    assert [p.declared_type for p in mail.attachments] == ["text/calendar", "text/plain"]


@given(st.binary(max_size=2000), st.sampled_from([c[1] for c in COMPLAINTS]))
def test_no_bytes_make_parsing_raise(noise: bytes, base: bytes) -> None:
    """Whatever arrives (truncated, corrupted, random), parsing answers with a ParsedMail."""
    for raw in (noise, base[: len(noise)] + noise, base.replace(b"\r\n\r\n", noise, 1)):
        mail = parse(raw)
        assert isinstance(mail.text, str) and isinstance(mail.subject, str)


@given(st.binary(max_size=300), st.sampled_from([None, "utf-8", "iso-8859-1", "gb2312",
                                                  "utf-16", "x-bogus", "windows-1252"]))
def test_decoding_never_raises(data: bytes, label: str | None) -> None:
    assert isinstance(decode_bytes(data, label), str)
