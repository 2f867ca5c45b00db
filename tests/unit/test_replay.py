"""Dead-letter replay of the SMS, X and email connectors: the kept payload goes through the
same parse path again, once (a second replay is a duplicate by the native id), and what is
still not a complaint fails with the reason."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from pydantic import SecretStr

from config.email import EmailSettings, MailboxSettings
from config.sms import SmsSettings
from config.x import XSettings
from connectors.base import BaseConnector
from connectors.email import EmailConnector
from connectors.email_imap import Fetched
from connectors.sms import GenericSms, SmsConnector
from connectors.testing import FakeIntake
from connectors.x import Includes, XConnector
from errors import ValidationFailed
from normalizer.ids import complaint_id

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


async def started(connector: BaseConnector) -> FakeIntake:
    intake = FakeIntake()
    await BaseConnector.start(connector, intake)  # the intake only: no loops, no sessions
    return intake


# -- SMS ---------------------------------------------------------------------------------------


async def test_sms_twilio_form_replays_once() -> None:
    connector = SmsConnector(SmsSettings(enabled=True, provider="twilio",
                                         auth_token=SecretStr("t")), public_url=None)
    intake = await started(connector)
    form = urlencode({"MessageSid": "SM1", "From": "+6281234567890", "To": "1708",
                      "Body": "Banjir di Jl. Pahlawan"}).encode()
    first = await connector.replay(form, FORM)
    assert first is not None and not first.duplicate
    raw = intake.messages[first.complaint_id]
    assert (raw.native_id, raw.text, raw.sender.phone) == ("SM1", "Banjir di Jl. Pahlawan",
                                                           "+6281234567890")
    assert raw.raw_payload == form and raw.raw_content_type == FORM
    second = await connector.replay(form, FORM)
    assert second is not None and second.duplicate and len(intake.messages) == 1
    with pytest.raises(ValidationFailed, match="MessageSid and From"):
        await connector.replay(urlencode({"Body": "tanpa pengirim"}).encode(), FORM)


async def test_sms_generic_json_replays_once_and_invalid_still_fails() -> None:
    connector = SmsConnector(SmsSettings(enabled=True, provider="generic",
                                         generic_hmac_secret=SecretStr("s")), public_url=None)
    intake = await started(connector)
    body = GenericSms.model_validate({"id": "g-1", "from": "081234567890",
                                      "text": "Lampu merah mati"}).to_json()
    first = await connector.replay(body, JSON)
    assert first is not None and not first.duplicate
    assert intake.messages[first.complaint_id].sender.phone == "+6281234567890"
    second = await connector.replay(body, JSON)
    assert second is not None and second.duplicate and len(intake.messages) == 1
    with pytest.raises(ValidationFailed, match="invalid generic SMS.*from"):
        await connector.replay(b'{"id": "g-2", "text": "tanpa nomor"}', JSON)


# -- X -----------------------------------------------------------------------------------------

OURS = "1500000000000000001"
CITIZEN = "1500000000000000002"


PAGE_INCLUDES = {
    "users": [{"id": CITIZEN, "username": "warga_smd", "name": "Warga Samarinda"}],
    "media": [{"media_key": "3_1", "type": "photo",
               "url": "https://pbs.twimg.com/media/3_1.jpg"}]}


def tweet(tweet_id: str, author: str = CITIZEN, **extra: Any) -> dict[str, Any]:
    return {"id": tweet_id, "author_id": author, "text": "@LAPOR1708 Jalan ambles di Loa Janan",
            "created_at": "2026-11-29T01:00:00.000Z",
            "entities": {"mentions": [{"id": OURS, "username": "LAPOR1708"}]}, **extra}


async def x_connector() -> tuple[XConnector, FakeIntake]:
    connector = XConnector(XSettings(enabled=True, bearer_token=SecretStr("b"), user_id=OURS,
                                     reply_mode="none"),
                           public_url=None)
    return connector, await started(connector)


async def test_x_malformed_tweet_is_kept_and_its_replay_fails_until_fixed() -> None:
    connector, intake = await x_connector()
    page = Includes()
    page.add(PAGE_INCLUDES)
    page.add({"users": [{"id": "1500000000000000009", "username": "lain", "name": "Lain"}]})
    await connector._submit_tweet(tweet("1900", created_at="gestern", attachments={
        "media_keys": ["3_1"]}), page)
    [(channel, _, reason, kept)] = intake.dead_letters
    assert channel == "x" and reason == "malformed tweet: ValueError"
    # The tweet and what the page said about it (only that: not the other user).
    assert orjson.loads(kept) == {"data": tweet("1900", created_at="gestern", attachments={
        "media_keys": ["3_1"]}), "includes": {**PAGE_INCLUDES, "places": []}}
    with pytest.raises(ValidationFailed, match="malformed tweet"):
        await connector.replay(kept, JSON)
    assert intake.messages == {}


async def test_x_kept_tweet_replays_once_with_its_includes() -> None:
    connector, intake = await x_connector()
    kept = orjson.dumps({"data": tweet("1901", attachments={"media_keys": ["3_1"]}),
                         "includes": PAGE_INCLUDES})
    first = await connector.replay(kept, JSON)
    assert first is not None and not first.duplicate
    assert first.complaint_id == complaint_id("x", OURS, "1901")
    raw = intake.messages[first.complaint_id]
    assert raw.sender.handle == "@warga_smd"
    assert [a.storage_ref for a in raw.attachments] == ["https://pbs.twimg.com/media/3_1.jpg"]
    second = await connector.replay(kept, JSON)
    assert second is not None and second.duplicate and len(intake.messages) == 1
    assert await connector.replay(orjson.dumps({"data": tweet("1902", author=OURS)}),
                                  JSON) is None  # our own tweet: deliberately not a complaint
    for broken in (b"[]", b'{"tweet": {}}', b'{"data": "1903"}', b"{"):
        with pytest.raises(ValidationFailed, match="not a kept tweet"):
            await connector.replay(broken, JSON)


# -- email -------------------------------------------------------------------------------------

LAPOR = "lapor@kaltimprov.go.id"
PU = "pengaduan@pu.go.id"


def mail(message_id: str, to: str, *, extra: str = "") -> bytes:
    return (f"From: Budi <budi@example.id>\r\nTo: {to}\r\nSubject: Jalan berlubang\r\n"
            f"Message-ID: <{message_id}>\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n"
            "\r\nJalan di depan SDN 012 berlubang besar.\r\n").encode()


def mailbox(address: str) -> MailboxSettings:
    return MailboxSettings(imap_host="h", username="u", password=SecretStr("p"),
                           from_address=address)


async def test_email_replay_goes_to_the_mailbox_it_was_delivered_to_once() -> None:
    connector = EmailConnector(EmailSettings(enabled=True, mailboxes=[mailbox(LAPOR),
                                                                      mailbox(PU)]))
    intake = await started(connector)
    kept = mail("m-1@example.id", f"Dinas PU <{PU.upper()}>")
    first = await connector.replay(kept, "message/rfc822")
    assert first is not None and not first.duplicate
    raw = intake.messages[first.complaint_id]
    assert (raw.account, raw.native_id, raw.raw_payload) == (PU, "m-1@example.id", kept)
    second = await connector.replay(kept, "message/rfc822")
    assert second is not None and second.duplicate and len(intake.messages) == 1
    with pytest.raises(ValidationFailed, match="none of our mailboxes"):
        await connector.replay(mail("m-2@example.id", "orang@lain.id"), "message/rfc822")


async def test_email_auto_reply_is_kept_and_its_replay_still_fails() -> None:
    connector = EmailConnector(EmailSettings(enabled=True, mailboxes=[mailbox(LAPOR)]))
    intake = await started(connector)
    [box] = connector._boxes.values()
    kept = mail("ooo-1@example.id", LAPOR, extra="Auto-Submitted: auto-replied\r\n")
    assert await connector.handle_batch(box, [connector.prepare(Fetched(1, kept, 1))]) == {1}
    [(_, account, reason, payload)] = intake.dead_letters
    assert (account, payload) == (LAPOR, kept) and reason.startswith("not a complaint")
    with pytest.raises(ValidationFailed, match="not a complaint"):
        await connector.replay(payload, "message/rfc822")
    assert intake.messages == {}
