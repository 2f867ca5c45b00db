"""The web form's field validation and its double-submit CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors import webform
from connectors.webform import BODY_MIN, CSRF_MAX_AGE_S, LIMITS, CsrfGuard, validate_fields
from normalizer.normalize import indonesian_today

VALID = {
    "submission_id": "0123456789abcdef0123456789abcdef",
    "judul": "Jalan berlubang",
    "isi": "Jalan di depan pasar berlubang besar sejak dua bulan.",
    "tanggal_kejadian": "2024-05-01",
    "kontak": "0812-3456-7890",
    "klasifikasi": "pengaduan",
}


def _form(**changes: Any) -> dict[str, str]:
    values = dict(VALID)
    for key, value in changes.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    return values


def test_valid_form_has_no_errors() -> None:
    assert validate_fields(VALID) == {}
    assert validate_fields(_form(kontak="budi@example.com")) == {}
    assert validate_fields(_form(kontak=None, tanggal_kejadian=None, klasifikasi=None)) == {}


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_missing_judul(value: str | None) -> None:
    errors = validate_fields(_form(judul=value))
    assert set(errors) == {"judul"}
    assert "wajib" in errors["judul"]


@pytest.mark.parametrize("value", [None, "", " \t\n "])
def test_missing_isi(value: str | None) -> None:
    errors = validate_fields(_form(isi=value))
    assert set(errors) == {"isi"}
    assert "wajib" in errors["isi"]


def test_short_isi() -> None:
    errors = validate_fields(_form(isi="  rusak  "))
    assert set(errors) == {"isi"}
    assert "terlalu pendek" in errors["isi"]
    assert str(BODY_MIN) in errors["isi"]
    assert validate_fields(_form(isi="x" * BODY_MIN)) == {}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_over_long_fields(name: str) -> None:
    # kontak: a well-formed email address, so only the length is wrong.
    value = "x" * (LIMITS[name] + 1) if name != "kontak" else \
        "x" * (LIMITS[name] - len("@example.com") + 1) + "@example.com"
    assert len(value) == LIMITS[name] + 1
    errors = validate_fields(_form(**{name: value}))
    assert name in errors
    assert str(LIMITS[name]) in errors[name]


@pytest.mark.parametrize(
    "submission_id",
    [None, "", "abc", "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcdeg",
     "0123456789abcdef0123456789abcdef0"],
)
def test_bad_submission_id(submission_id: str | None) -> None:
    errors = validate_fields(_form(submission_id=submission_id))
    assert set(errors) == {"form"}
    assert "Muat ulang" in errors["form"]


def test_future_tanggal_kejadian() -> None:
    # "Today" is Indonesia's latest date (WIT, UTC+9), not the machine's: from 15:00 UTC the
    # machine's tomorrow is already today in Papua, and not in the future.
    today = indonesian_today(datetime.now(UTC))
    tomorrow = (today + timedelta(days=1)).isoformat()
    errors = validate_fields(_form(tanggal_kejadian=tomorrow))
    assert set(errors) == {"tanggal_kejadian"}
    assert "masa depan" in errors["tanggal_kejadian"]
    assert validate_fields(_form(tanggal_kejadian=today.isoformat())) == {}


@pytest.mark.parametrize("value", ["kemarin", "01/05/2024", "2024-02-30"])
def test_invalid_tanggal_kejadian(value: str) -> None:
    errors = validate_fields(_form(tanggal_kejadian=value))
    assert set(errors) == {"tanggal_kejadian"}
    assert "tidak valid" in errors["tanggal_kejadian"]


@pytest.mark.parametrize("value", ["budi@", "budi@example", "abc", "12", "@budi"])
def test_bad_kontak(value: str) -> None:
    errors = validate_fields(_form(kontak=value))
    assert set(errors) == {"kontak"}
    assert "email" in errors["kontak"]


def test_unknown_klasifikasi() -> None:
    errors = validate_fields(_form(klasifikasi="gosip"))
    assert set(errors) == {"klasifikasi"}


def test_several_errors_at_once() -> None:
    errors = validate_fields({"isi": "pendek"})
    assert set(errors) == {"isi", "judul", "form"}


# --- CsrfGuard --------------------------------------------------------------------------------

SECRET = b"k" * 32


def test_issued_pair_verifies() -> None:
    guard = CsrfGuard(SECRET)
    cookie, token = guard.issue()
    assert token.startswith(cookie + ".")
    assert guard.verify(cookie, token) is True


def test_pairs_are_unique() -> None:
    guard = CsrfGuard(SECRET)
    assert guard.issue() != guard.issue()


def test_tampered_signature_fails() -> None:
    guard = CsrfGuard(SECRET)
    cookie, token = guard.issue()
    last = token[-1]
    tampered = token[:-1] + ("0" if last != "0" else "1")
    assert guard.verify(cookie, tampered) is False
    assert guard.verify(cookie, cookie + ".") is False
    assert guard.verify(cookie, cookie) is False


def test_non_ascii_tampering_fails_without_crashing() -> None:
    # A form token is citizen-controlled text; non-ASCII must be refused, not raise TypeError
    # from hmac.compare_digest (which would become an HTTP 500).
    guard = CsrfGuard(SECRET)
    cookie, token = guard.issue()
    assert guard.verify(cookie, token[:-1] + "é") is False
    assert guard.verify("é" + cookie, token) is False


def test_token_for_another_cookie_fails() -> None:
    guard = CsrfGuard(SECRET)
    cookie_a, token_a = guard.issue()
    cookie_b, token_b = guard.issue()
    assert guard.verify(cookie_a, token_b) is False
    assert guard.verify(cookie_b, token_a) is False


def test_token_from_another_secret_fails() -> None:
    cookie, token = CsrfGuard(b"other secret").issue()
    assert CsrfGuard(SECRET).verify(cookie, token) is False


@pytest.mark.parametrize("which", ["cookie", "token", "both"])
@pytest.mark.parametrize("empty", [None, ""])
def test_missing_values_fail(which: str, empty: str | None) -> None:
    guard = CsrfGuard(SECRET)
    cookie, token = guard.issue()
    assert guard.verify(empty if which in ("cookie", "both") else cookie,
                        empty if which in ("token", "both") else token) is False


def test_expired_token_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = CsrfGuard(SECRET)
    issued_at = time.time()
    monkeypatch.setattr(webform.time, "time", lambda: issued_at)
    cookie, token = guard.issue()
    monkeypatch.setattr(webform.time, "time", lambda: issued_at + CSRF_MAX_AGE_S - 60)
    assert guard.verify(cookie, token) is True
    monkeypatch.setattr(webform.time, "time", lambda: issued_at + CSRF_MAX_AGE_S + 1)
    assert guard.verify(cookie, token) is False


def test_signed_nonce_without_timestamp_fails() -> None:
    # Even a correctly signed nonce is refused when its issue time is not a number.
    nonce = "kemarin.abc"
    signature = hmac.new(SECRET, nonce.encode(), hashlib.sha256).hexdigest()[:32]
    assert CsrfGuard(SECRET).verify(nonce, f"{nonce}.{signature}") is False
