"""Content-addressed attachment storage on local disk."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

from errors import AttachmentRejected, ValidationFailed
from gateway import attachments
from gateway.attachments import AttachmentStore
from normalizer.schema import AttachmentState

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + b"x" * 500


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "attachments"


async def test_stores_png(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    att = await store.store(name="foto jalan.png", declared_type="image/png", data=PNG)
    digest = hashlib.sha256(PNG).hexdigest()
    assert att.sha256 == digest
    assert att.size == len(PNG)
    assert att.content_type == "image/png"
    assert att.name == "foto jalan.png"
    assert att.state is AttachmentState.STORED
    assert att.storage_ref == f"file:attachments/{digest[:2]}/{digest}"
    path = store.path_of(digest)
    assert path == root / digest[:2] / digest
    assert path.read_bytes() == PNG
    assert _files(root) == [path]  # no temporary file left behind


async def test_type_is_sniffed_not_declared(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    att = await store.store(name="scan.jpg", declared_type="image/jpeg", data=PDF)
    assert att.content_type == "application/pdf"


async def test_name_is_made_safe(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    att = await store.store(name="../../etc/foto.png", declared_type=None, data=PNG)
    assert att.name == "foto.png"
    assert not (root.parent / "etc").exists()


async def test_same_bytes_twice_is_one_file(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    first = await store.store(name="a.png", declared_type="image/png", data=PNG)
    second = await store.store(name="b.png", declared_type="image/png", data=PNG)
    assert first.storage_ref == second.storage_ref
    assert first.sha256 == second.sha256
    assert (first.name, second.name) == ("a.png", "b.png")
    assert len(_files(root)) == 1


async def test_different_bytes_are_different_files(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    a = await store.store(name="a.png", declared_type=None, data=PNG)
    b = await store.store(name="b.pdf", declared_type=None, data=PDF)
    assert a.sha256 != b.sha256
    assert {p.name for p in _files(root)} == {a.sha256, b.sha256}


async def test_concurrent_store_of_same_bytes(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A double-clicked form uploads the same file twice at once: both must succeed.

    The two writer threads are held at their first fsync until both have opened their temporary
    file, which makes the interleaving deterministic.
    """
    barrier = threading.Barrier(2)
    real_fsync = attachments.os.fsync
    calls = 0
    lock = threading.Lock()

    def fsync(fd: int) -> None:
        nonlocal calls
        with lock:
            calls += 1
            first_two = calls <= 2
        if first_two:
            try:
                barrier.wait(timeout=1)
            except threading.BrokenBarrierError:
                pass  # a serialising implementation never lets both threads in: fine
        real_fsync(fd)

    monkeypatch.setattr(attachments.os, "fsync", fsync)
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    results = await asyncio.gather(
        store.store(name="a.png", declared_type=None, data=PNG),
        store.store(name="a.png", declared_type=None, data=PNG),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    digest = hashlib.sha256(PNG).hexdigest()
    assert store.path_of(digest).read_bytes() == PNG
    assert _files(root) == [store.path_of(digest)]


async def test_too_large_is_rejected(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=2 * 1024 * 1024)
    data = PNG + b"\x00" * (2 * 1024 * 1024)
    with pytest.raises(AttachmentRejected) as info:
        await store.store(name="besar.png", declared_type="image/png", data=data)
    assert isinstance(info.value, ValidationFailed)
    assert "lampiran" in info.value.fields
    assert "besar.png" in info.value.fields["lampiran"]
    assert "2 MB" in info.value.fields["lampiran"]
    assert _files(root) == []


async def test_limit_is_inclusive(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=len(PNG))
    assert (await store.store(name="a.png", declared_type=None, data=PNG)).size == len(PNG)
    with pytest.raises(AttachmentRejected):
        await store.store(name="b.png", declared_type=None, data=PNG + b"\x00")


async def test_too_large_message_states_a_sub_mib_limit_correctly(root: Path) -> None:
    # With a limit under 1 MiB the citizen must not be told the limit is "0 MB".
    store = AttachmentStore(root, max_bytes=500 * 1024)
    with pytest.raises(AttachmentRejected) as info:
        await store.store(name="a.png", declared_type=None, data=PNG + b"\x00" * 600 * 1024)
    assert "batas 0 MB" not in info.value.fields["lampiran"]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("foto.jpg", b"MZ\x90\x00" + b"\x00" * 200),
        ("foto.jpg", b"\x7fELF\x02\x01\x01" + b"\x00" * 200),
        ("catatan.txt", b"hanya teks biasa, bukan berkas yang diterima"),
        ("arsip.zip", b"PK\x03\x04" + b"\x00" * 200),
    ],
)
async def test_wrong_type_is_rejected(root: Path, name: str, data: bytes) -> None:
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    with pytest.raises(AttachmentRejected) as info:
        await store.store(name=name, declared_type="image/jpeg", data=data)
    assert "lampiran" in info.value.fields
    assert name in info.value.fields["lampiran"]
    assert _files(root) == []


async def test_empty_file_is_rejected(root: Path) -> None:
    store = AttachmentStore(root, max_bytes=1024 * 1024)
    with pytest.raises(AttachmentRejected) as info:
        await store.store(name="kosong.png", declared_type="image/png", data=b"")
    assert "lampiran" in info.value.fields
    assert _files(root) == []
