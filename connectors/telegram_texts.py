"""What the Telegram bot says (Bahasa Indonesia) and the pure helpers around it (no I/O).

Kept apart from :mod:`connectors.telegram` so wording can be reviewed, and the command parser
and status formatter unit-tested, without a bot.
"""

from __future__ import annotations

from collections.abc import Mapping

HELP = (
    "Selamat datang di layanan pengaduan SP4N-LAPOR!.\n\n"
    "Kirim laporan Anda sebagai pesan biasa di sini: jelaskan apa yang terjadi, di mana, dan "
    "kapan. Anda boleh menambahkan foto, dokumen, atau membagikan lokasi sesudah pesan teks; "
    "semuanya kami gabungkan ke laporan yang sama.\n"
    "Setelah laporan tersimpan, kami kirimkan kode pelacakan.\n\n"
    "Perintah:\n"
    "/status KODE - melihat perkembangan laporan\n"
    "/batal KODE - menarik laporan Anda (tak lama sesudah mengirimnya)\n"
    "/bantuan - petunjuk ini"
)
UNKNOWN_COMMAND = "Perintah tidak dikenal.\n\n" + HELP
STATUS_USAGE = "Tulis kode pelacakan sesudah perintah, misalnya: /status ABCDE-12345"
STATUS_UNKNOWN = (
    "Kode {code} tidak ditemukan. Periksa kembali kode pelacakan Anda "
    "(contoh: /status ABCDE-12345)."
)
GROUP_ONLY_PRIVATE = (
    "Untuk menjaga kerahasiaan pelapor, laporan hanya diterima lewat pesan pribadi. "
    "Silakan kirim pesan langsung ke @{username}."
)
FILE_TOO_BIG = (
    "Berkas {name} lebih besar dari {limit_mb} MB sehingga tidak dapat kami unduh. "
    "Laporan Anda tetap kami terima tanpa berkas itu; kirim berkas yang lebih kecil bila perlu."
)
FILE_REFUSED = (
    "Berkas {name} tidak dapat kami simpan (jenis atau ukurannya tidak diterima). "
    "Laporan Anda tetap kami terima tanpa berkas itu."
)
FILE_UNAVAILABLE = (
    "Berkas {name} tidak dapat kami unduh dari Telegram. Laporan Anda tetap kami terima; "
    "kirim ulang berkas itu bila perlu."
)
NOT_ACCEPTED = "Laporan belum dapat kami terima: {reason}"
NOT_ACCEPTED_DEFAULT = "isi laporan tidak lengkap. Tuliskan laporan Anda sebagai pesan teks."

#: Body placeholders for messages without words of their own (the schema needs a body).
PHOTO = "[Foto]"
DOCUMENT = "[Dokumen: {name}]"
VIDEO = "[Video]"
VOICE = "[Pesan suara]"
LOCATION = "[Lokasi: {lat:.6f}, {lon:.6f}]"
CONTACT = "[Kontak]"
SHARED_CONTACT = "Kontak dibagikan: {name} {phone}"
NOT_STORED = "[Lampiran tidak tersimpan: {name}]"

#: Command aliases: what a citizen may type, and what it means.
COMMANDS = {
    "start": "help", "bantuan": "help", "help": "help", "mulai": "help",
    "status": "status", "cek": "status",
    "batal": "withdraw",
}


def parse_command(text: str, bot_username: str | None) -> tuple[str, str] | None:
    """``("status", "ABCDE-12345")`` for ``/status@bot ABCDE-12345``; None for plain text.

    The command is lower-cased and its ``@bot`` suffix dropped; a command addressed to another
    bot (``/start@other_bot``) is not ours: None. Unknown commands come back as they are (the
    caller answers with help).
    """
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2:
        return None
    head, _, rest = stripped.partition(" ")
    name, _, target = head[1:].partition("@")
    if target and (bot_username is None or target.lower() != bot_username.lower()):
        return None
    if not name or not all(c.isalnum() or c == "_" for c in name):
        return None
    return name.lower(), rest.strip()


def status_text(code: str, status: Mapping[str, object] | None) -> str:
    """The answer to ``/status KODE``: public fields only, never the reporter.

    The title is shown only when the complaint is not confidential (``public_status`` already
    withholds it then; checked again here).
    """
    if status is None:
        return STATUS_UNKNOWN.format(code=code)
    lines = [f"Laporan {status.get('tracking_code') or code}"]
    label = status.get("status_label") or status.get("status")
    if label:
        lines.append(f"Status: {label}")
    received = status.get("received_at")
    if isinstance(received, str) and received:
        lines.append(f"Diterima: {received[:10]}")
    title = status.get("title")
    if title and not status.get("confidential"):
        lines.append(f"Judul: {title}")
    agency = status.get("agency")
    if agency:
        lines.append(f"Instansi tujuan: {agency}")
    return "\n".join(lines)


def limit_mb(limit_bytes: int) -> int:
    """A byte limit as whole megabytes, as Telegram counts them (decimal)."""
    return max(1, limit_bytes // 1_000_000)
