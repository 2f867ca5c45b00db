"""Which emails are ``STATUS``/``BATAL`` commands, and how status notices are threaded."""

from __future__ import annotations

import pytest

from connectors.email_commands import mail_command
from connectors.email_smtp import build_reply, complaint_of, reply_message_id
from tests.unit.test_email import CID, box

CODE = "K7M2Q-9XD4T"


@pytest.mark.parametrize(("subject", "body", "expected"), [
    ("", f"STATUS {CODE}", ("status", CODE)),
    ("Tanya", f"status {CODE.lower()}", ("status", CODE.lower())),
    (f"Re: Jalan berlubang [{CODE}]", "status", ("status", CODE)),
    (f"Re: Jalan berlubang [{CODE}]", "BATAL", ("withdraw", CODE)),
    ("", "batal", ("withdraw", "")),
    (f"STATUS {CODE}", "", ("status", CODE)),
    (f"Status {CODE}", "Mohon info perkembangannya, terima kasih.", ("status", CODE)),
    ("status", CODE, ("status", CODE)),
    (CODE, "Status.", ("status", CODE)),
    (f"batal {CODE}", "", ("withdraw", CODE)),
])
def test_commands_in_subject_or_body(subject: str, body: str,
                                     expected: tuple[str, str]) -> None:
    assert mail_command(subject, body) == expected


@pytest.mark.parametrize(("subject", "body"), [
    ("Status jalan", "Jalan di depan pasar rusak parah, mohon segera diperbaiki."),
    ("Status", "Jalan di depan pasar rusak parah, mohon segera diperbaiki."),
    (f"Re: Jalan berlubang [{CODE}]", "Tambahan: lubangnya makin lebar."),
    ("Jalan rusak", "STATUS jalan di depan rumah saya sudah rusak setahun lebih."),
    ("", ""),
])
def test_complaints_and_follow_ups_are_not_commands(subject: str, body: str) -> None:
    assert mail_command(subject, body) is None


def test_a_status_notice_answers_our_acknowledgement_with_its_own_id() -> None:
    ack = build_reply(box(), to="budi@example.id", text="ack", tracking_code=CODE,
                      complaint_id=CID, subject="Jalan rusak", in_reply_to="m1@example.id",
                      references="")
    notices = [build_reply(box(), to="budi@example.id", text="notice", tracking_code=CODE,
                           complaint_id=CID, subject="Jalan rusak",
                           in_reply_to="m1@example.id", references="m0@example.id", kind=kind)
               for kind in ("status:v-1", "status:f-1", "status:v-1")]
    ack_id = ack["Message-ID"]
    assert ack["In-Reply-To"] == "<m1@example.id>"
    assert [n["In-Reply-To"] for n in notices] == [ack_id] * 3
    assert notices[0]["References"] == f"<m0@example.id> <m1@example.id> {ack_id}"
    ids = [n["Message-ID"] for n in notices]
    assert ids[0] == ids[2] != ids[1] and ack_id not in ids  # one id per event, stable
    assert all(CODE in n["Subject"] for n in notices)
    for message_id in ids:  # the citizen answering a notice writes a follow-up
        assert complaint_of(message_id.strip("<>").lower(), {"kaltimprov.go.id"}) == CID
    fallback = reply_message_id(CODE, CID, "kaltimprov.go.id", "ack>email")
    assert fallback == ack_id
