"""Structured logs: one JSON object per line, with ``connector`` and ``complaint_id``.

Configured once by the CLI (:func:`setup_logging`). Each line carries ``ts``, ``level``,
``logger``, ``msg``, and, where known, ``connector`` and ``complaint_id``: from the record's
``extra=``, else from :data:`connectors.base.LOG_CONTEXT` (set while a message is handled),
else (``connector`` only) from a ``connectors.<name>`` logger. A last safety net masks phone
numbers, e-mail addresses and NIKs in the message and the traceback: PII is never logged.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from connectors.base import LOG_CONTEXT
from normalizer.pii import mask_pii

CONTEXT_FIELDS = ("connector", "complaint_id")
EXTRA_FIELDS = ("alert", "tracking_code", "channel")  # other extra= keys worth keeping


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_pii(record.getMessage()).text,
        }
        context = LOG_CONTEXT.get() or {}
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None) or context.get(key)
            if value:
                line[key] = str(value)
        if "connector" not in line and record.name.startswith("connectors."):
            line["connector"] = record.name.split(".")[1].split("_")[0]
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = str(value)
        if record.exc_info:
            line["exc"] = mask_pii(self.formatException(record.exc_info)).text
        return orjson.dumps(line).decode()


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """JSON lines on stderr at ``level``; quiets chatty libraries."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):  # a second call replaces the first one's handler
        if isinstance(old.formatter, JsonFormatter):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka reports every failed reconnect at ERROR; our forwarder reports broker trouble.
    logging.getLogger("aiokafka").setLevel("DEBUG" if level == "DEBUG" else "CRITICAL")
    logging.getLogger("aiohttp.access").setLevel("WARNING")
    # httpx (python-telegram-bot's transport) logs every request URL, which holds the bot token.
    logging.getLogger("httpx").setLevel("WARNING")
