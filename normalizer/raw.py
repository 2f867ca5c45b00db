"""`RawMessage`: a channel message as a connector received it, before normalisation.

It lives here (not in ``connectors/``) because the normalizer turns it into a ``Complaint`` and
may not import connectors; ``connectors.base`` re-exports it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from normalizer.schema import CONTROL_CHARACTERS, Attachment, Classification, Location


class Sender(BaseModel):
    """Who sent the message, as the channel tells it (not yet normalised)."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    handle: str | None = None
    email: str | None = None
    phone: str | None = None
    channel_user_id: str | None = None


class RawMessage(BaseModel):
    """One inbound message from one channel.

    ``(channel, account, native_id)`` is the message's source position and idempotency key: the
    same triple always yields the same complaint id, whatever the redelivery.
    """

    model_config = ConfigDict(frozen=True)

    channel: str = Field(description="Channel name: webform, api, whatsapp, telegram, ...")
    account: str = Field(description="Which of our accounts received it (number, mailbox, bot).")
    native_id: str = Field(description="The channel's own message id (wamid, UID, update_id...).")
    received_at: datetime
    sent_at: datetime | None = None
    sender: Sender = Sender()
    text: str = ""
    title: str | None = None
    attachments: tuple[Attachment, ...] = ()
    location: Location | None = None
    incident_date: str | None = Field(None, description="As the citizen wrote it (ISO date).")
    agency: str | None = None
    category: str | None = None
    classification: Classification | None = None
    anonymous: bool = False
    confidential: bool = False
    thread_of: str | None = None
    edit_of: str | None = Field(
        None,
        description="Native id of the message this one edits (same channel and account): the "
        "edit revises that complaint's text instead of becoming a new complaint.",
    )
    connector: str = ""
    raw_payload: bytes = Field(b"", description="The bytes as received, kept for audit.")
    raw_content_type: str = "application/octet-stream"
    reply_hints: dict[str, str] = Field(
        default_factory=dict,
        description="What the connector needs later to answer on the channel (chat id, "
        "Message-ID, phone number id...). Kept in the outbox, never sent to Kafka.",
    )


def sender_key(raw: RawMessage) -> str | None:
    """The citizen's identity on the message's channel: user id, else phone, email, handle."""
    sender = raw.sender
    key = sender.channel_user_id or sender.phone or sender.email or sender.handle
    return CONTROL_CHARACTERS.sub("", key) if key else None
