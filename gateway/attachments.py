"""Content-addressed attachment storage on local disk (``<data_dir>/attachments``).

Files are named by their SHA-256, written to a temporary file, fsynced and renamed, so a
reference in a durable complaint always points at complete bytes. The same file sent twice is
stored once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path

from errors import AttachmentRejected, StoreUnavailable
from normalizer.media import ACCEPTED_TYPES, safe_filename, sniff_content_type
from normalizer.schema import Attachment

STORAGE_SCHEME = "file"
RETRY_AFTER_S = 30.0  # disk full: an operator must free space; no point retrying at once


class AttachmentStore:
    """Stores attachment bytes and returns :class:`Attachment` references."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self._root = root
        self._max_bytes = max_bytes

    async def store(self, *, name: str, declared_type: str | None, data: bytes) -> Attachment:
        """Check, store durably and describe one attachment. Raises AttachmentRejected."""
        clean_name = safe_filename(name)
        if not data:
            raise AttachmentRejected("empty attachment",
                                     {"lampiran": f"Berkas {clean_name} kosong."})
        if len(data) > self._max_bytes:
            raise AttachmentRejected(
                "attachment too large",
                {"lampiran": f"Berkas {clean_name} melebihi batas "
                             f"{human_size(self._max_bytes)}."},
            )
        kind = sniff_content_type(data[:64], clean_name)
        if kind is None or kind not in ACCEPTED_TYPES:
            raise AttachmentRejected(
                f"attachment type not accepted (declared {declared_type!r})",
                {"lampiran": f"Jenis berkas {clean_name} tidak diterima "
                             "(gunakan gambar, PDF, dokumen, audio atau video)."},
            )
        digest = hashlib.sha256(data).hexdigest()
        try:
            await asyncio.to_thread(self._write, digest, data)
        except OSError as exc:  # disk full, quota, I/O error: transient for the sender
            raise StoreUnavailable(f"attachment not stored: {exc.strerror or exc}",
                                   retry_after=RETRY_AFTER_S) from exc
        return Attachment(name=clean_name, content_type=kind, size=len(data), sha256=digest,
                          storage_ref=f"{STORAGE_SCHEME}:attachments/{digest[:2]}/{digest}")

    def path_of(self, digest: str) -> Path:
        return self._root / digest[:2] / digest

    def _write(self, digest: str, data: bytes) -> None:
        target = self.path_of(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{digest[:8]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)  # same bytes from a concurrent writer: either wins
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def human_size(size: int) -> str:
    """``10 MB``, ``512 KB`` or ``300 byte``: a limit as a citizen reads it."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):g} MB"
    if size >= 1024:
        return f"{size / 1024:g} KB"
    return f"{size} byte"
