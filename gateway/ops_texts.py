"""The dashboard's texts in Bahasa Indonesia (first) and English."""

from __future__ import annotations

LANGUAGES = ("id", "en")

TEXTS: dict[str, dict[str, str]] = {
    "id": {
        "title": "Dasbor Operasional",
        "login_title": "Masuk ke dasbor operasional",
        "token": "Token operasional",
        "login": "Masuk",
        "logout": "Keluar",
        "wrong_token": "Token salah.",
        "disabled": "Dasbor dinonaktifkan: atur gateway.ops_token untuk mengaktifkannya.",
        "channels": "Kanal",
        "state": "Status",
        "running": "berjalan", "degraded": "terganggu", "failed": "gagal",
        "paused": "dijeda", "stopped": "berhenti",
        "received": "diterima", "accepted": "diteruskan", "duplicates": "duplikat",
        "rejected": "ditolak", "errors": "galat",
        "last_success": "Sukses terakhir", "last_error": "Galat terakhir",
        "backlog": "Antrean", "per_min": "pesan/menit",
        "pause": "Jeda", "resume": "Lanjutkan", "restart": "Mulai ulang",
        "throughput": "Arus pesan per kanal",
        "forwarder": "Penerusan ke pusat",
        "outbox_pending": "Belum dikonfirmasi pusat", "outbox_oldest": "tertua (detik)",
        "dead_letters": "Surat mati (pesan yang tidak dapat menjadi laporan)",
        "none": "Tidak ada.",
        "time": "Waktu", "channel": "Kanal", "reason": "Alasan", "size": "Ukuran",
        "replay": "Kirim ulang", "replay_result": "Hasil kirim ulang",
        "overdue": "Laporan melewati batas waktu",
        "tracking_code": "Kode pelacakan", "agency": "Instansi", "due": "Batas waktu",
        "alerts": "Peringatan terbaru",
        "raised": "Muncul", "resolved": "Selesai", "open": "aktif",
        "done_pause": "Konektor dijeda:", "done_resume": "Konektor dilanjutkan:",
        "done_restart": "Konektor dimulai ulang:", "done_replayed": "Surat mati dikirim ulang:",
        "done_replay_failed": "Kirim ulang gagal:",
        "updated": "Diperbarui",
    },
    "en": {
        "title": "Operations dashboard",
        "login_title": "Sign in to the operations dashboard",
        "token": "Ops token",
        "login": "Sign in",
        "logout": "Sign out",
        "wrong_token": "Wrong token.",
        "disabled": "Dashboard disabled: set gateway.ops_token to enable it.",
        "channels": "Channels",
        "state": "State",
        "running": "running", "degraded": "degraded", "failed": "failed",
        "paused": "paused", "stopped": "stopped",
        "received": "received", "accepted": "accepted", "duplicates": "duplicates",
        "rejected": "rejected", "errors": "errors",
        "last_success": "Last success", "last_error": "Last error",
        "backlog": "Backlog", "per_min": "msg/min",
        "pause": "Pause", "resume": "Resume", "restart": "Restart",
        "throughput": "Throughput per channel",
        "forwarder": "Forwarding to the central store",
        "outbox_pending": "Not yet confirmed", "outbox_oldest": "oldest (seconds)",
        "dead_letters": "Dead letters (messages that could not become complaints)",
        "none": "None.",
        "time": "Time", "channel": "Channel", "reason": "Reason", "size": "Size",
        "replay": "Replay", "replay_result": "Replay result",
        "overdue": "Overdue complaints",
        "tracking_code": "Tracking code", "agency": "Agency", "due": "Due",
        "alerts": "Recent alerts",
        "raised": "Raised", "resolved": "Resolved", "open": "open",
        "done_pause": "Connector paused:", "done_resume": "Connector resumed:",
        "done_restart": "Connector restarted:", "done_replayed": "Dead letter replayed:",
        "done_replay_failed": "Replay failed:",
        "updated": "Updated",
    },
}


def language(query: str | None, accept_language: str | None) -> str:
    """``?lang=`` when it names a language we have, else the first of ours in
    ``Accept-Language``, else Bahasa Indonesia."""
    if query in TEXTS:
        return query
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in TEXTS:
            return code
    return "id"
