"""Attachment checks without I/O: content-type sniffing and safe file names."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath
from urllib.parse import unquote

#: Types a complaint may carry (images, documents, audio, video), by their magic bytes.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"%PDF-", 0, "application/pdf"),
    (b"OggS", 0, "audio/ogg"),
    (b"ID3", 0, "audio/mpeg"),
    (b"ftyp", 4, "video/mp4"),
)
_RIFF_KINDS = {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}
_ZIP_OFFICE = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
ACCEPTED_TYPES = frozenset(
    {t for _, _, t in _SIGNATURES} | set(_RIFF_KINDS.values()) | set(_ZIP_OFFICE.values())
)
NAME_MAX = 255
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def sniff_content_type(head: bytes, filename: str = "") -> str | None:
    """The accepted content type the bytes really are, or None when they are not one.

    The declared type is never trusted: a ``.jpg`` that is an executable is refused.
    """
    for magic, offset, kind in _SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[head[8:12]]
    if head[:4] == b"PK\x03\x04":
        suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        return _ZIP_OFFICE.get(suffix)
    return None


def safe_filename(name: str | None, fallback: str = "lampiran") -> str:
    """A file name without directories, control or reserved characters, at most 255 chars."""
    # Percent-decoded first: "..%2F..%2Fetc" must not survive for a later decoder to expand.
    base = PureWindowsPath(PurePosixPath(unquote(name or "")).name).name
    base = _UNSAFE.sub("_", unicodedata.normalize("NFC", base)).strip(" .")
    if not base:
        return fallback
    if len(base) > NAME_MAX:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[: NAME_MAX - len(suffix) - 1] + dot + suffix) if dot and len(suffix) < 16 \
            else base[:NAME_MAX]
    return base
