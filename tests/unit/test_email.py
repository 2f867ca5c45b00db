"""Email settings, the reply message, and how our replies are recognised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from config.email import EmailSettings, MailboxSettings
from config.settings import load_settings
from connectors.base import BaseConnector
from connectors.email import EmailConnector
from connectors.email_imap import BATCH_BYTES, Cursor, Fetched, _by_size
from connectors.email_smtp import build_reply, complaint_of, reply_message_id, reply_subject
from connectors.testing import FakeIntake
from errors import ConfigError, StoreUnavailable
from tests.unit.test_email_mime import auto_reply, base64_body, plain, quoted_printable

CID = "0123456789abcdef0123456789abcdef"


def box(**extra: Any) -> MailboxSettings:
    base: dict[str, Any] = {"imap_host": "mail.kaltimprov.go.id", "username": "lapor",
                            "password": SecretStr("rahasia"),
                            "from_address": "LAPOR@KaltimProv.go.id"}
    base.update(extra)
    return MailboxSettings(**base)


def test_single_and_list_forms_combine(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[connectors.email]\nenabled = true\nimap_host = "mail.kaltimprov.go.id"\n'
        'username = "lapor"\npassword = "x"\nfrom_address = "lapor@kaltimprov.go.id"\n'
        '[[connectors.email.mailboxes]]\nimap_host = "mail.pu.go.id"\nusername = "pu"\n'
        'password = "y"\nfrom_address = "pengaduan@pu.go.id"\nsmtp_host = "smtp.pu.go.id"\n')
    settings = load_settings(config).connectors.email
    boxes = settings.all_mailboxes()
    assert [b.from_address for b in boxes] == ["lapor@kaltimprov.go.id", "pengaduan@pu.go.id"]
    assert boxes[0].imap_ssl and boxes[0].imap_port == 993 and boxes[0].folder == "INBOX"
    connector = EmailConnector(settings)
    assert connector.accounts == ["lapor@kaltimprov.go.id", "pengaduan@pu.go.id"]
    assert connector.replies  # one mailbox has SMTP


def test_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPOR_CONNECTORS__EMAIL__PASSWORD", "dari-env")
    config = tmp_path / "c.toml"
    config.write_text('[connectors.email]\nenabled = true\nimap_host = "h"\nusername = "u"\n'
                      'from_address = "a@b.id"\n')
    [only] = load_settings(config).connectors.email.all_mailboxes()
    assert only.password.get_secret_value() == "dari-env"
    assert "dari-env" not in repr(only)


@pytest.mark.parametrize(("body", "problem"), [
    ("enabled = true\n", "connectors.email"),
    ('enabled = true\nimap_host = "h"\nusername = "u"\n', "connectors.email"),
    ('enabled = true\nimap_host = "h"\nusername = "u"\npassword = "p"\n'
     'from_address = "bukan-alamat"\n', "from_address"),
    ('done_keyword = "two words"\n', "done_keyword"),
    ('enabled = true\n[[connectors.email.mailboxes]]\nimap_host = "h"\nusername = "u"\n'
     'password = "p"\nfrom_address = "a@b.id"\n[[connectors.email.mailboxes]]\nimap_host = "g"\n'
     'username = "v"\npassword = "q"\nfrom_address = "A@b.id"\n', "share a from_address"),
])
def test_bad_configuration_names_the_key(tmp_path: Path, body: str, problem: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[connectors.email]\n" + body)
    with pytest.raises(ConfigError, match=problem):
        load_settings(config)


def test_smtp_login_defaults_to_imap_credentials() -> None:
    assert box().smtp_login() == ("lapor", "rahasia")
    assert box(smtp_username="", smtp_password=SecretStr("z")).smtp_login() is None
    assert box(smtp_username="s", smtp_password=SecretStr("z")).smtp_login() == ("s", "z")
    assert box().from_address == "lapor@kaltimprov.go.id" and box().domain == "kaltimprov.go.id"


def test_our_message_id_names_the_complaint_without_a_lookup() -> None:
    ours = reply_message_id("K7M2Q-9XD4T", CID, "kaltimprov.go.id")
    normalised = ours.strip("<>").lower()
    assert complaint_of(normalised, {"kaltimprov.go.id"}) == CID
    assert complaint_of(normalised, {"other.go.id"}) is None
    assert complaint_of("abc@kaltimprov.go.id", {"kaltimprov.go.id"}) is None


@pytest.mark.parametrize(("subject", "expected"), [
    ("Jalan rusak", "Re: Jalan rusak [K7M2Q-9XD4T]"),
    ("RE: Fwd: Jalan rusak", "Re: Jalan rusak [K7M2Q-9XD4T]"),
    ("Re: Jalan rusak [K7M2Q-9XD4T]", "Re: Jalan rusak [K7M2Q-9XD4T]"),
    ("", "Laporan Anda telah diterima [K7M2Q-9XD4T]"),
])
def test_reply_subject_carries_the_code_once(subject: str, expected: str) -> None:
    assert reply_subject(subject, "K7M2Q-9XD4T") == expected


def test_reply_is_threaded_and_marked_automatic() -> None:
    message = build_reply(box(from_name="LAPOR! Kaltim"), to="budi@example.id",
                          text="Kode pelacakan: K7M2Q-9XD4T.", tracking_code="K7M2Q-9XD4T",
                          complaint_id=CID, subject="Jalan rusak", in_reply_to="m1@example.id",
                          references="m0@example.id")
    assert message["From"] == "LAPOR! Kaltim <lapor@kaltimprov.go.id>"
    assert message["In-Reply-To"] == "<m1@example.id>"
    assert message["References"] == "<m0@example.id> <m1@example.id>"
    assert message["Message-ID"] == f"<K7M2Q-9XD4T.{CID}@kaltimprov.go.id>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert "K7M2Q-9XD4T" in message.get_content()


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor.loads('{"uidvalidity": 7, "last_uid": 42, "since": "2026-11-01"}')
    assert cursor is not None and cursor.last_uid == 42
    assert Cursor.loads(cursor.dumps()) == cursor
    assert Cursor.loads("not json") is None and Cursor.loads('{"last_uid": 1}') is None


def test_settings_defaults_keep_old_mail_out() -> None:
    settings = EmailSettings()
    assert settings.backfill_days == 7 and not settings.enabled
    with pytest.raises(ValidationError):
        EmailSettings(idle_renew_s=3600)  # beyond the 30 minutes servers allow


async def test_a_batch_is_durable_recorded_or_left_for_later() -> None:
    """Only what is durable (or recorded) is reported done: a store outage leaves its message
    un-flagged, a poison message becomes a dead letter instead of blocking the mailbox."""
    settings = EmailSettings(enabled=True, imap_host="h", username="u",
                             password=SecretStr("p"), from_address="lapor@kaltimprov.go.id")
    connector = EmailConnector(settings)
    intake = FakeIntake()
    await BaseConnector.start(connector, intake)  # the intake only: no worker threads
    real_submit = intake.submit

    async def submit(raw: Any) -> Any:
        if raw.native_id == "qp-1@example.id":
            raise StoreUnavailable("database restarting")
        if raw.native_id == "b64-1@example.id":
            raise RuntimeError("a bug meets an odd message")
        return await real_submit(raw)

    intake.submit = submit  # type: ignore[method-assign]
    box = settings.all_mailboxes()[0]
    items = [Fetched(1, plain(), 1), Fetched(2, quoted_printable(), 1),
             Fetched(3, base64_body(), 1), Fetched(4, auto_reply(), 1),
             Fetched(5, b"Subject: x\r\n", 99, too_large=True)]
    done = await connector.handle_batch(box, [connector.prepare(item) for item in items])
    assert done == {1, 3, 4, 5}
    assert [raw.native_id for raw in intake.messages.values()] == ["plain-1@mail.example.id"]
    reasons = [reason for _, _, reason, _ in intake.dead_letters]
    assert "connector error: RuntimeError" in reasons
    assert any(r.startswith("not a complaint: auto-submitted") for r in reasons)
    assert any("over max_message_bytes" in r for r in reasons)
    assert len(reasons) == 3


def test_batches_are_cut_by_size() -> None:
    half = BATCH_BYTES // 2
    sizes = {1: half, 2: half, 3: 10, 4: BATCH_BYTES * 2, 5: half + 1}
    assert _by_size([1, 2, 3, 4, 5], sizes, largest=BATCH_BYTES) == [[1, 2], [3, 4, 5]]
    assert _by_size([4], sizes, largest=BATCH_BYTES * 4) == [[4]]  # never an empty chunk
