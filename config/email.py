"""``[connectors.email]``: complaints read from IMAP mailboxes, acknowledged by SMTP.

One mailbox is configured by the section's own keys (``imap_host``, ``username``, ...); several
(one per agency) by ``[[connectors.email.mailboxes]]`` tables with the same keys. Both forms may
be combined. Passwords belong in the environment
(``LAPOR_CONNECTORS__EMAIL__PASSWORD``, ``LAPOR_CONNECTORS__EMAIL__SMTP_PASSWORD``).
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator, model_validator

from config.base import ConnectorSettings, MiB, Section

#: An IMAP keyword is an atom: no space, parentheses, braces, quotes, ``%``, ``*``, ``\``, ``]``.
_KEYWORD_RE = re.compile(r"^[A-Za-z0-9_.$-]{1,64}$")
_ADDRESS_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class MailboxSettings(Section):
    """One mailbox: where complaints arrive (IMAP) and how we answer from it (SMTP)."""

    imap_host: str = Field(description="IMAP server host name.")
    imap_port: int = Field(993, ge=1, le=65535, description="IMAP port (993 TLS, 143 plain).")
    imap_ssl: bool = Field(True, description="Implicit TLS for IMAP (port 993).")
    username: str = Field(description="IMAP login (usually the mailbox address).")
    password: SecretStr = Field(description="IMAP password (set it in the environment).")
    folder: str = Field("INBOX", description="Folder read for complaints.")
    smtp_host: str | None = Field(None, description="SMTP server for replies (unset: no replies).")
    smtp_port: int = Field(465, ge=1, le=65535, description="SMTP port (465 TLS, 587 STARTTLS).")
    smtp_ssl: bool = Field(
        True, description="Implicit TLS for SMTP; false uses STARTTLS when the server offers it."
    )
    smtp_username: str | None = Field(
        None, description="SMTP login (default: the IMAP username); empty string: no SMTP AUTH."
    )
    smtp_password: SecretStr | None = Field(
        None, description="SMTP password (default: the IMAP password)."
    )
    from_address: str = Field(description="Our address: the From of replies, the account name.")
    from_name: str = Field("LAPOR!", description="Display name of replies.")

    @field_validator("from_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _ADDRESS_RE.match(value.strip()):
            raise ValueError("must be an email address such as lapor@kaltimprov.go.id")
        return value.strip().lower()

    @property
    def domain(self) -> str:
        """The domain of ``from_address`` (our Message-IDs end with it)."""
        return self.from_address.rpartition("@")[2]

    def smtp_login(self) -> tuple[str, str] | None:
        """``(user, password)`` for SMTP AUTH, or None when AUTH is off."""
        user = self.username if self.smtp_username is None else self.smtp_username
        if not user:
            return None
        secret = self.smtp_password if self.smtp_password is not None else self.password
        return user, secret.get_secret_value()


class EmailSettings(ConnectorSettings):
    """``[connectors.email]``: mailboxes, fetching, limits and replies."""

    enabled: bool = Field(False, description="Read complaints from the configured mailboxes.")
    imap_host: str | None = Field(None, description="IMAP host of the single-mailbox form.")
    imap_port: int = Field(993, ge=1, le=65535)
    imap_ssl: bool = True
    username: str | None = None
    password: SecretStr | None = None
    folder: str = "INBOX"
    smtp_host: str | None = None
    smtp_port: int = Field(465, ge=1, le=65535)
    smtp_ssl: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    from_address: str | None = None
    from_name: str = "LAPOR!"
    mailboxes: list[MailboxSettings] = Field(
        default_factory=list,
        description="More mailboxes ([[connectors.email.mailboxes]], same keys), e.g. one per "
        "agency.",
    )
    backfill_days: int = Field(
        7, ge=0,
        description="First connection to a mailbox: import mail received in the last N days "
        "only (by the server's internal date; 0: from today).",
    )
    poll_interval_s: float = Field(
        60.0, gt=0, description="Seconds between checks when the server has no IDLE."
    )
    idle_renew_s: float = Field(
        540.0, gt=0, le=1740,
        description="IDLE is re-issued this often (servers may drop it after 30 minutes).",
    )
    fetch_batch: int = Field(100, ge=1, le=1000, description="Messages fetched per round trip.")
    timeout_s: float = Field(60.0, gt=0, description="IMAP/SMTP connect and read timeout.")
    max_backoff_s: float = Field(
        300.0, gt=0, description="Longest wait between reconnection attempts."
    )
    max_message_bytes: int = Field(
        40 * MiB, gt=0, description="Larger messages are kept as dead letters, not parsed."
    )
    max_attachment_bytes: int = Field(
        10 * MiB, gt=0, description="Largest attachment or inline image stored."
    )
    max_attachments: int = Field(10, ge=0, le=50, description="Attachments kept per message.")
    done_keyword: str = Field(
        "LaporDiterima",
        description="IMAP keyword set (with \\Seen) once a message is durable or recorded.",
    )

    @field_validator("done_keyword")
    @classmethod
    def _keyword(cls, value: str) -> str:
        if not _KEYWORD_RE.match(value):
            raise ValueError("must be an IMAP atom: letters, digits, _ . $ -")
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> EmailSettings:
        if not self.enabled:
            return self
        boxes = self.all_mailboxes()
        if not boxes:
            raise ValueError("connectors.email needs imap_host, username, password and "
                             "from_address, or at least one [[connectors.email.mailboxes]]")
        accounts = [box.from_address for box in boxes]
        if len(set(accounts)) != len(accounts):
            raise ValueError("connectors.email: two mailboxes share a from_address")
        return self

    def all_mailboxes(self) -> list[MailboxSettings]:
        """The single-mailbox keys (when ``imap_host`` is set) followed by ``mailboxes``."""
        boxes = list(self.mailboxes)
        if self.imap_host:
            if not (self.username and self.password is not None and self.from_address):
                raise ValueError("connectors.email: imap_host needs username, password and "
                                 "from_address")
            boxes.insert(0, MailboxSettings(
                imap_host=self.imap_host, imap_port=self.imap_port, imap_ssl=self.imap_ssl,
                username=self.username, password=self.password, folder=self.folder,
                smtp_host=self.smtp_host, smtp_port=self.smtp_port, smtp_ssl=self.smtp_ssl,
                smtp_username=self.smtp_username, smtp_password=self.smtp_password,
                from_address=self.from_address, from_name=self.from_name))
        return boxes
