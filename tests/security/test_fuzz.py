"""The parsers that read what strangers send, fuzzed with hypothesis for a bounded time.

Each parser may refuse input only in its documented way (None, a ``Parsed`` with malformed
entries, a pydantic ``ValidationError``); any other exception would be a 500 or a crashed
loop. Examples are shaped like the real payloads (so the fuzzing gets past the first checks)
with every leaf replaced by arbitrary JSON. ``test_atheris_parsers`` adds a short
coverage-guided run (atheris, libFuzzer) over raw bytes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from telegram import Bot

from connectors.api import PartnerComplaint
from connectors.meta import parse_meta
from connectors.sms import GenericSms
from connectors.telegram import _parse_update
from connectors.webform import validate_fields
from connectors.whatsapp import parse_whatsapp
from normalizer.ids import parse_tracking_code
from normalizer.media import safe_filename, sniff_content_type

BOUNDED = settings(max_examples=300, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "\x00", "text", "image", "../../x", "<script>", "9" * 40, "\udcff"[:0]])
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20)


def leaf(value: Any) -> st.SearchStrategy[Any]:
    """The real value or anything at all."""
    return st.just(value) | JSON


def wa_payloads() -> st.SearchStrategy[Any]:
    message = st.fixed_dictionaries({
        "from": leaf("6281234567890"), "id": leaf("wamid.X"), "timestamp": leaf("1764400000"),
        "type": st.sampled_from(["text", "image", "location", "interactive", "unknown"]) | JSON,
        "text": leaf({"body": "Jalan rusak"}),
        "image": leaf({"id": "1", "mime_type": "image/jpeg"}),
        "location": leaf({"latitude": -0.5, "longitude": 117.1}),
        "context": leaf({"id": "wamid.P"})})
    value = st.fixed_dictionaries({
        "messaging_product": leaf("whatsapp"),
        "metadata": leaf({"phone_number_id": "1065"}),
        "contacts": leaf([{"wa_id": "6281234567890", "profile": {"name": "A"}}]),
        "messages": st.lists(message, max_size=3) | JSON,
        "statuses": leaf([{"id": "wamid.Y", "status": "read", "recipient_id": "62"}])})
    change = st.fixed_dictionaries({"field": leaf("messages"), "value": value | JSON})
    entry = st.fixed_dictionaries({"id": leaf("W"), "changes": st.lists(change, max_size=2)})
    return st.fixed_dictionaries({"object": leaf("whatsapp_business_account"),
                                  "entry": st.lists(entry, max_size=2) | JSON})


def meta_payloads() -> st.SearchStrategy[Any]:
    event = st.fixed_dictionaries({
        "sender": leaf({"id": "PSID"}), "recipient": leaf({"id": "PAGE"}),
        "timestamp": leaf(1764400000000),
        "message": leaf({"mid": "m1", "text": "Lampu mati"}) | st.fixed_dictionaries({
            "mid": leaf("m1"), "text": leaf("x"), "is_echo": leaf(False),
            "attachments": leaf([{"type": "image", "payload": {"url": "https://x/y.jpg"}}]),
            "reply_to": leaf({"mid": "m0"})})})
    entry = st.fixed_dictionaries({"id": leaf("PAGE"), "time": leaf(1764400000000),
                                   "messaging": st.lists(event, max_size=3) | JSON})
    return st.fixed_dictionaries({"object": st.sampled_from(["page", "instagram"]) | JSON,
                                  "entry": st.lists(entry, max_size=2) | JSON})


@BOUNDED
@given(wa_payloads())
def test_whatsapp_parser_never_raises(payload: Any) -> None:
    if isinstance(payload, dict):
        parse_whatsapp(payload)


@BOUNDED
@given(meta_payloads())
def test_meta_parser_never_raises(payload: Any) -> None:
    if isinstance(payload, dict):
        parse_meta(payload)


def telegram_bodies() -> st.SearchStrategy[bytes]:
    message = st.fixed_dictionaries({
        "message_id": leaf(1), "date": leaf(1764400000), "text": leaf("Sampah"),
        "from": leaf({"id": 7, "is_bot": False, "first_name": "B"}),
        "chat": leaf({"id": 7, "type": "private"}),
        "photo": leaf([{"file_id": "f", "file_unique_id": "u", "width": 1, "height": 1}]),
        "location": leaf({"latitude": 1.0, "longitude": 2.0})})
    update = st.fixed_dictionaries({"update_id": leaf(5), "message": message | JSON})
    return update.map(lambda u: json.dumps(u, default=str).encode()) | st.binary(max_size=200)


BOT = Bot("123456:AAE-fuzz")


@BOUNDED
@given(telegram_bodies())
def test_telegram_update_parser_never_raises(body: bytes) -> None:
    update, problem = _parse_update(body, BOT)
    assert (update is None) == bool(problem)


@BOUNDED
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v, default=str).encode()))
def test_partner_and_sms_bodies_fail_only_with_validation_errors(body: bytes) -> None:
    for model in (PartnerComplaint, GenericSms):
        try:
            model.model_validate_json(body)
        except ValidationError:
            pass


@BOUNDED
@given(st.text(max_size=60))
def test_tracking_code_parser_returns_none_or_the_canonical_form(text: str) -> None:
    code = parse_tracking_code(text)
    if code is not None:
        assert re.fullmatch(r"[0-9A-Z]{5}-[0-9A-Z]{5}", code), code
        assert parse_tracking_code(code) == code  # canonical: parsing again changes nothing


@BOUNDED
@given(st.text(max_size=300))
def test_safe_filename_never_keeps_a_path(name: str) -> None:
    safe = safe_filename(name)
    assert safe and len(safe) <= 255
    assert "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert safe not in (".", "..")


@BOUNDED
@given(st.binary(max_size=80), st.text(max_size=30))
def test_content_sniffing_never_raises(head: bytes, name: str) -> None:
    sniff_content_type(head, name)


@BOUNDED
@given(st.dictionaries(st.sampled_from(["judul", "isi", "lokasi", "kontak", "nama",
                                        "tanggal_kejadian", "klasifikasi", "instansi", "x"]),
                       st.text(max_size=60), max_size=9))
def test_form_validation_answers_every_input(values: dict[str, str]) -> None:
    errors = validate_fields(values)
    assert all(isinstance(v, str) and v for v in errors.values())


ATHERIS_TARGETS = Path(__file__).with_name("atheris_targets.py")


def test_atheris_parsers() -> None:
    """A bounded coverage-guided run over raw bytes (atheris ships Linux wheels for 3.11)."""
    result = subprocess.run(
        [sys.executable, str(ATHERIS_TARGETS), "-runs=30000", "-max_total_time=20",
         "-rss_limit_mb=1024", "-seed=1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr, result.stderr[-1000:]
