"""SMS connector pieces without the network: signatures, length handling, Gammu env, keywords."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from config.sms import SmsSettings
from connectors.commands import parse_text_command
from connectors.sms import (
    gammu_messages_from_env,
    generic_signature,
    is_gsm7,
    sms_length,
    sms_parts,
    status_text,
    twilio_signature,
)
from gateway.replies import ack_text

# --- signatures -------------------------------------------------------------------------------

TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309",
                 "To": "+18005551212", "Caller": "+14158675309"}


def test_twilio_signature_matches_the_reference_vector() -> None:
    # twilio-python tests/unit/test_request_validator.py
    assert twilio_signature("12345", TWILIO_URL, TWILIO_PARAMS.items()) == \
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_twilio_signature_sorts_repeated_parameters_by_value() -> None:
    params = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert twilio_signature("12345", TWILIO_URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_generic_signature_is_hex_hmac_sha256() -> None:
    # printf '{"a":1}' | openssl dgst -sha256 -hmac rahasia
    assert generic_signature("rahasia", b'{"a":1}') == (
        "sha256=08836e62b4f33c64dcda4ca602ea06519a05339dcda19c9f03451d6097a6083b")
    assert generic_signature("rahasia", b"x") != generic_signature("lain", b"x")


# --- length handling --------------------------------------------------------------------------


def test_gsm7_detection_and_extension_characters_count_double() -> None:
    assert is_gsm7("Jalan rusak di Jl. Juanda @ RT 03!")
    assert not is_gsm7("Jalan rusak 🙏")
    assert not is_gsm7("ĕ")
    assert sms_length("a€[") == 5
    assert sms_length("🙏") == 2  # a surrogate pair is two UCS-2 units


def test_short_text_is_one_part() -> None:
    assert sms_parts("x" * 160) == ["x" * 160]
    assert sms_parts("é" * 160) == ["é" * 160]  # é is in GSM-7
    assert sms_parts("ĕ" * 70) == ["ĕ" * 70]


def test_long_gsm_text_is_split_at_words_into_153_septet_parts() -> None:
    text = ack_text("ABCDE-12345", "https://lapor.samarindakota.go.id")
    assert sms_length(text) > 160
    parts = sms_parts(text)
    assert len(parts) == 2
    assert all(sms_length(p) <= 153 for p in parts)
    assert " ".join(parts) == text
    assert "ABCDE-12345" in parts[0] or "ABCDE-12345" in parts[1]


def test_ucs2_text_is_split_into_67_unit_parts() -> None:
    text = "Terima kasih 🙏 " * 10
    parts = sms_parts(text, max_parts=5)
    assert all(sms_length(p) <= 67 for p in parts)
    assert " ".join(parts).split() == text.split()


def test_too_long_text_is_truncated_to_max_parts() -> None:
    text = "kata " * 200
    parts = sms_parts(text, max_parts=3)
    assert len(parts) == 3
    assert parts[-1].endswith("...")
    assert all(sms_length(p) <= 153 for p in parts)


# --- keyword and status answer ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "code"), [
    ("STATUS ABCDE-12345", "ABCDE-12345"), ("status abcde12345", "abcde12345"),
    ("  Status: abcde-12345 ", "abcde-12345"), ("STATUS", ""),
])
def test_status_keyword(text: str, code: str) -> None:
    assert parse_text_command(text) == ("status", code)


@pytest.mark.parametrize(("text", "code"), [
    ("BATAL ABCDE-12345", "ABCDE-12345"), ("batal", ""), ("/Batal: abcde12345", "abcde12345"),
])
def test_withdraw_keyword(text: str, code: str) -> None:
    assert parse_text_command(text) == ("withdraw", code)


@pytest.mark.parametrize("text", [
    "Status jalan di depan rumah saya rusak parah", "Lampu jalan padam STATUS ABCDE-12345",
    "Batal berangkat karena jembatan putus",
])
def test_status_word_in_a_complaint_is_not_the_keyword(text: str) -> None:
    assert parse_text_command(text) is None


def test_status_text_never_shows_the_title() -> None:
    status = {"tracking_code": "ABCDE-12345", "status": "received", "status_label": "Diterima",
              "received_at": "2026-11-29T04:00:00+00:00", "title": "Rahasia sekali",
              "agency": "Dinas PUPR", "confidential": False}
    text = status_text("ABCDE-12345", status)
    assert text == "Laporan ABCDE-12345: Diterima. Diterima 2026-11-29. Instansi: Dinas PUPR."
    assert "tidak ditemukan" in status_text("XXXXX", None)


# --- Gammu RunOnReceive -----------------------------------------------------------------------


def test_gammu_single_message() -> None:
    env = {"SMS_MESSAGES": "1", "SMS_1_NUMBER": "+6281234567890", "SMS_1_TEXT": "Jalan rusak",
           "SMS_1_CLASS": "-1", "DECODED_PARTS": "0"}
    [message] = gammu_messages_from_env(env, ["IN20261129_040000_00_+6281234567890_00.txt"])
    assert message.from_ == "+6281234567890"
    assert message.text == "Jalan rusak"
    assert message.id.startswith("gammu:") and "6281234567890" not in message.id


def test_gammu_multipart_prefers_the_decoded_text() -> None:
    env = {"SMS_MESSAGES": "2", "SMS_1_NUMBER": "081234567890", "SMS_1_TEXT": "Bagian satu ",
           "SMS_2_NUMBER": "081234567890", "SMS_2_TEXT": "bagian dua",
           "DECODED_PARTS": "1", "DECODED_1_TEXT": "Bagian satu bagian dua"}
    [message] = gammu_messages_from_env(env, ["7", "8"], to="1708")
    assert message.text == "Bagian satu bagian dua"
    assert message.to == "1708"


def test_gammu_multipart_without_decoded_text_joins_physical_parts() -> None:
    env = {"SMS_MESSAGES": "2", "SMS_1_NUMBER": "081234567890", "SMS_1_TEXT": "Bagian satu ",
           "SMS_2_NUMBER": "081234567890", "SMS_2_TEXT": "bagian dua"}
    [message] = gammu_messages_from_env(env)
    assert message.text == "Bagian satu bagian dua"


def test_gammu_ids_are_stable_and_distinct() -> None:
    env = {"SMS_MESSAGES": "1", "SMS_1_NUMBER": "0812", "SMS_1_TEXT": "a"}
    first = gammu_messages_from_env(env, ["1"])[0].id
    assert gammu_messages_from_env(env, ["1"])[0].id == first
    assert gammu_messages_from_env(env, ["2"])[0].id != first


def test_gammu_empty_environment_gives_nothing() -> None:
    assert gammu_messages_from_env({}) == []
    assert gammu_messages_from_env({"SMS_MESSAGES": "x"}) == []


# --- settings ---------------------------------------------------------------------------------


def test_settings_defaults_and_required_secrets() -> None:
    assert SmsSettings().enabled is False
    with pytest.raises(ValidationError, match="auth_token"):
        SmsSettings(enabled=True, provider="twilio")
    with pytest.raises(ValidationError, match="generic_hmac_secret"):
        SmsSettings(enabled=True, provider="gammu")
    ok = SmsSettings(enabled=True, provider="generic",
                     generic_hmac_secret=SecretStr("kunci-rahasia"))
    assert "kunci-rahasia" not in repr(ok)
    with pytest.raises(ValidationError):
        SmsSettings.model_validate({"provder": "twilio"})


def test_every_settings_field_is_documented() -> None:
    for name, info in SmsSettings.model_fields.items():
        assert info.description, name
