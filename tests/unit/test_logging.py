"""Structured logs: every line one JSON object, connector and complaint id where known, and
no phone number or e-mail address of a citizen, whatever a message says."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from connectors.base import BaseConnector
from connectors.testing import FakeIntake
from gateway.logging_json import JsonFormatter, setup_logging
from normalizer.ids import complaint_id
from normalizer.raw import RawMessage, Sender


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    setup_logging("INFO", buffer)
    yield buffer
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


class Chatty(BaseConnector):
    name = "webform"


class LoggingIntake(FakeIntake):
    async def submit(self, raw: RawMessage):  # type: ignore[no-untyped-def]  # test double
        logging.getLogger("gateway.intake").info("intake webform accepted")
        return await super().submit(raw)


async def test_lines_are_json_with_connector_and_complaint_id(stream: io.StringIO) -> None:
    connector = Chatty()
    await connector.start(LoggingIntake())
    raw = RawMessage(channel="webform", account="web", native_id="n-1",
                     received_at=datetime.now(UTC), sender=Sender(name="Rina"),
                     text="Jalan berlubang di depan sekolah.", raw_payload=b"{}",
                     raw_content_type="application/json")
    await connector.submit(raw)
    logging.getLogger("connectors.telegram").warning("getUpdates failed: HTTP 502")
    logging.getLogger("gateway.ops").info("paused", extra={"connector": "x"})
    logging.getLogger("gateway.app").info("listening")
    intake, telegram, ops, app = lines(stream)
    assert intake["msg"] == "intake webform accepted"
    assert intake["connector"] == "webform"
    assert intake["complaint_id"] == complaint_id("webform", "web", "n-1")
    assert telegram["connector"] == "telegram" and telegram["level"] == "WARNING"
    assert ops["connector"] == "x"
    assert "connector" not in app and "complaint_id" not in app
    assert {"ts", "level", "logger", "msg"} <= set(app)


def test_contact_details_are_masked(stream: io.StringIO) -> None:
    log = logging.getLogger("connectors.sms")
    log.error("could not parse reply from +6281234567890 <rina.warga@example.id>")
    try:
        raise ValueError("bad sender 081234567890")
    except ValueError:
        log.exception("handling failed")
    text = stream.getvalue()
    assert "81234567890" not in text and "rina.warga@example.id" not in text
    first, second = lines(stream)
    assert first["connector"] == "sms"
    assert "exc" in second and "ValueError" in second["exc"]
