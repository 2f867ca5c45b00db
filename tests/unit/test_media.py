"""Content types are sniffed from the bytes, never trusted; file names are made safe."""

from __future__ import annotations

import pytest

from normalizer.media import ACCEPTED_TYPES, NAME_MAX, safe_filename, sniff_content_type

PAD = b"\x00" * 32


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0" + PAD, "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n" + PAD, "image/png"),
        (b"GIF87a" + PAD, "image/gif"),
        (b"GIF89a" + PAD, "image/gif"),
        (b"%PDF-1.7\n" + PAD, "application/pdf"),
        (b"OggS\x00\x02" + PAD, "audio/ogg"),
        (b"ID3\x04\x00" + PAD, "audio/mpeg"),
        (b"\x00\x00\x00\x18ftypmp42" + PAD, "video/mp4"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 " + PAD, "image/webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + PAD, "audio/wav"),
        (b"RIFF\x24\x00\x00\x00AVI LIST" + PAD, "video/x-msvideo"),
    ],
)
def test_sniff_each_signature(head: bytes, kind: str) -> None:
    assert sniff_content_type(head) == kind
    assert sniff_content_type(head, "whatever.bin") == kind
    assert kind in ACCEPTED_TYPES


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("laporan.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("DATA.XLSX", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("archive.zip", None),
        ("noextension", None),
        ("", None),
    ],
)
def test_sniff_zip_office_by_extension(filename: str, kind: str | None) -> None:
    assert sniff_content_type(b"PK\x03\x04" + PAD, filename) == kind


@pytest.mark.parametrize(
    "head",
    [
        b"MZ\x90\x00\x03\x00\x00\x00" + PAD,  # Windows PE
        b"\x7fELF\x02\x01\x01" + PAD,  # Linux ELF
        b"#!/bin/sh\nrm -rf /\n",
        b"<html><script>alert(1)</script>",
        b"RIFF\x24\x00\x00\x00XXXX" + PAD,  # unknown RIFF kind
        b"",
    ],
)
@pytest.mark.parametrize("filename", ["foto.jpg", "dokumen.pdf", "scan.png", ""])
def test_sniff_refuses_non_media_whatever_the_name(head: bytes, filename: str) -> None:
    assert sniff_content_type(head, filename) is None


def test_sniff_ignores_the_extension_for_real_media() -> None:
    # A PNG named .jpg is a PNG.
    assert sniff_content_type(b"\x89PNG\r\n\x1a\n" + PAD, "foto.jpg") == "image/png"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/var/www/foto.jpg", "foto.jpg"),
        ("C:\\x\\y.pdf", "y.pdf"),
        ("..\\..\\windows\\boot.ini", "boot.ini"),
        ("sub/dir\\mixed/name.png", "name.png"),
        ("foto jalan.jpg", "foto jalan.jpg"),
    ],
)
def test_safe_filename_strips_directories(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_removes_control_and_reserved_characters() -> None:
    result = safe_filename("fo\x00to\n\x1b jalan*?<>|:\".jpg")
    assert result.endswith(".jpg")
    assert result.startswith("fo")
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in result)
    assert not set(result) & set('/\\:*?"<>|')


def test_safe_filename_applies_nfc() -> None:
    assert safe_filename("Cafe\u0301.jpg") == "Caf\u00e9.jpg"


@pytest.mark.parametrize("name", [None, "", "   ", "..", "...", "../", "C:\\", "/"])
def test_safe_filename_falls_back_when_nothing_is_left(name: str | None) -> None:
    assert safe_filename(name) == "lampiran"
    assert safe_filename(name, fallback="berkas") == "berkas"


def test_safe_filename_long_name_keeps_extension() -> None:
    result = safe_filename("a" * 400 + ".pdf")
    assert len(result) == NAME_MAX
    assert result.endswith(".pdf")
    assert result == "a" * (NAME_MAX - 4) + ".pdf"


def test_safe_filename_long_name_with_absurd_extension_is_cut() -> None:
    result = safe_filename("a" * 300 + "." + "b" * 40)
    assert len(result) == NAME_MAX


def test_safe_filename_short_name_untouched() -> None:
    name = "x" * (NAME_MAX - 4) + ".pdf"
    assert safe_filename(name) == name
