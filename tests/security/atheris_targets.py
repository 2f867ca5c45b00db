"""atheris (libFuzzer) entry point: raw bytes into every parser of what strangers send.

Run by ``test_fuzz.py::test_atheris_parsers`` with a bounded ``-runs``/``-max_total_time``.
Documented refusals are caught; anything else escapes and libFuzzer reports the crash.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson  # noqa: E402 - third-party code is not instrumented (only ours is)
from pydantic import ValidationError  # noqa: E402
from telegram import Bot  # noqa: E402

with atheris.instrument_imports(include=["connectors", "normalizer"]):
    from connectors.api import PartnerComplaint
    from connectors.meta import parse_meta
    from connectors.sms import GenericSms
    from connectors.telegram import _parse_update
    from connectors.whatsapp import parse_whatsapp
    from normalizer.ids import parse_tracking_code
    from normalizer.media import safe_filename, sniff_content_type

BOT = Bot("123456:AAE-fuzz")


def one_input(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    parse_tracking_code(text)
    safe_filename(text)
    sniff_content_type(data[:64], text[:40])
    _parse_update(data, BOT)
    for model in (PartnerComplaint, GenericSms):
        try:
            model.model_validate_json(data)
        except ValidationError:
            pass
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if isinstance(payload, dict):
        parse_whatsapp(payload)
        parse_meta(payload)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
