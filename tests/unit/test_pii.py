"""PII masking: NIK, phones, e-mails and bank accounts masked; ordinary numbers left alone."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from normalizer.pii import Finding, find_pii, mask_pii

# --- examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize("written", [
    "0812-3456-7890", "0812 3456 7890", "081234567890", "0812.3456.7890", "+62 812 3456 7890",
    "+62-812-3456-7890", "+6281234567890", "6281234567890", "(+62) 812 3456 7890",
    "62 812-3456-7890",
])
def test_phone_numbers_in_any_common_writing(written: str) -> None:
    result = mask_pii(f"hubungi saya di {written} ya")
    assert result.text == "hubungi saya di 0812****7890 ya"
    assert [f.kind for f in result.found] == ["phone"]


def test_phone_after_a_word_without_space() -> None:
    assert mask_pii("wa:081234567890").text == "wa:0812****7890"


def test_landline_only_after_a_contact_word() -> None:
    assert mask_pii("telp (0541) 741234").text == "telp 0541**1234"
    assert mask_pii("kantor 0541-741234").text == "kantor 0541-741234"


def test_nik_keeps_region_and_serial() -> None:
    result = mask_pii("NIK 6472031505900001")
    assert result.text == "NIK 6472********0001"
    assert result.found == (Finding("nik", 4, 20),)


def test_nik_written_in_groups() -> None:
    assert mask_pii("KK: 6472 0315 0590 0002").text == "KK: 6472********0002"


def test_implausible_sixteen_digits_need_a_nik_word() -> None:
    # Day 99 and month 99 cannot be a NIK; without "NIK"/"KTP" nearby it is left alone.
    assert mask_pii("nomor 6472999999999999").found == ()
    assert mask_pii("ktp 6472999999999999").text == "ktp 6472********9999"


def test_email_keeps_first_letter_and_domain() -> None:
    assert mask_pii("email siti.aminah@gmail.com ya").text == "email s***@gmail.com ya"


@pytest.mark.parametrize(("text", "masked"), [
    ("transfer ke rek BCA 1234567890 a.n. Siti", "transfer ke rek BCA ******7890 a.n. Siti"),
    ("norek: 137-00-1234567-8", "norek: *********5678"),
    ("BRI 0123-01-012345-50-1", "BRI ***********5501"),
    ("no rekening mandiri 1370012345678", "no rekening mandiri *********5678"),
])
def test_bank_accounts_near_a_bank_word(text: str, masked: str) -> None:
    assert mask_pii(text).text == masked


def test_long_numbers_without_a_bank_word_stay() -> None:
    assert mask_pii("id pelanggan 531234567890").found == ()


@pytest.mark.parametrize("text", [
    "Rp50.000", "Rp 1.500.000.000", "rek 1.250.000.000", "tgl 03/11/2026", "03-11-2026",
    "08-11-2026", "jam 14.30", "RT 03/RW 05", "No. 12", "Jl. A. Yani Km 5", "tahun 2026",
    "uang 1500000 ditransfer ke bank", "SDN 003", "1,5 juta", "2026-11-03",
])
def test_ordinary_numbers_are_never_masked(text: str) -> None:
    assert mask_pii(text).text == text


def test_several_kinds_in_one_text_in_order() -> None:
    text = "Saya Siti, NIK 6472031505900001, hp 0812-3456-7890, email siti@mail.id"
    result = mask_pii(text)
    assert [f.kind for f in result.found] == ["nik", "phone", "email"]
    assert result.text == "Saya Siti, NIK 6472********0001, hp 0812****7890, email s***@mail.id"
    for finding in result.found:
        assert text[finding.start:finding.end]  # positions refer to the original text


def test_text_without_pii_is_returned_as_is() -> None:
    result = mask_pii("Jalan rusak parah")
    assert result.text == "Jalan rusak parah" and result.found == ()


# --- properties ---------------------------------------------------------------------------------

_WORDS = st.sampled_from([
    "jalan", "rusak", "lampu", "mati", "di", "rumah", "warga", "sudah", "hari", "mohon",
    "Samarinda", "rek", "transfer", "bank", "BCA", "nik", "telp", "kel.", "RT", "No.", "tgl",
    "dan", "Rp", "jam", "km", "hubungi", "😡", "!!", ",", "wa", "email",
])
_SAFE_NUMBERS = st.one_of(
    st.integers(0, 99999).map(str),  # house numbers, counts, short codes
    st.builds(lambda d, m, y: f"{d:02d}/{m:02d}/{y}", st.integers(1, 28), st.integers(1, 12),
              st.integers(2000, 2030)),
    st.builds(lambda d, m, y: f"{d}-{m}-{y}", st.integers(1, 28), st.integers(1, 12),
              st.integers(2000, 2030)),
    st.builds(lambda n: f"Rp{n:,}".replace(",", "."), st.integers(1000, 10**12)),
    st.builds(lambda n: f"Rp {n}", st.integers(1000, 10**12)),
    st.builds(lambda rt, rw: f"RT {rt:02d}/RW {rw:02d}", st.integers(1, 40), st.integers(1, 20)),
    st.builds(lambda h, m: f"{h}.{m:02d}", st.integers(0, 23), st.integers(0, 59)),
)
#: Text without PII: words and ordinary numbers, a word always between two numbers.
_SAFE_TEXT = st.lists(st.tuples(_WORDS, st.one_of(st.none(), _SAFE_NUMBERS)), max_size=12).map(
    lambda parts: " ".join(w if n is None else f"{w} {n}" for w, n in parts))

_MOBILE_DIGITS = st.builds(lambda op, rest: f"8{op}{rest}",
                           st.sampled_from(["11", "12", "13", "21", "22", "52", "53", "77",
                                            "78", "81", "95", "96"]),
                           st.text("0123456789", min_size=7, max_size=9))


@st.composite
def _phones(draw: st.DrawFn) -> str:
    digits = draw(_MOBILE_DIGITS)
    prefix = draw(st.sampled_from(["0", "+62", "62", "+62 ", "(+62) ", "+62-"]))
    sep = draw(st.sampled_from(["", " ", "-", "."]))
    groups = [digits[:3], digits[3:7], digits[7:]]
    return prefix + sep.join(g for g in groups if g)


@st.composite
def _niks(draw: st.DrawFn) -> str:
    province = draw(st.sampled_from(["64", "65", "31", "32", "73"]))
    kab = draw(st.integers(1, 79))
    kec = draw(st.integers(1, 40))
    day = draw(st.integers(1, 31)) + draw(st.sampled_from([0, 40]))
    month = draw(st.integers(1, 12))
    year = draw(st.integers(0, 99))
    serial = draw(st.integers(1, 9999))
    return f"{province}{kab:02d}{kec:02d}{day:02d}{month:02d}{year:02d}{serial:04d}"


_EMAILS = st.builds(lambda user, domain: f"{user}@{domain}",
                    st.from_regex(r"[a-z][a-z0-9._]{0,15}[a-z0-9]", fullmatch=True),
                    st.sampled_from(["gmail.com", "yahoo.co.id", "samarindakota.go.id",
                                     "mail.id"]))


@settings(max_examples=100, deadline=None)
@given(_SAFE_TEXT)
def test_text_without_pii_is_never_changed(text: str) -> None:
    assert mask_pii(text).text == text


@settings(max_examples=100, deadline=None)
@given(_SAFE_TEXT, st.one_of(_phones(), _niks(), _EMAILS), _SAFE_TEXT)
def test_masking_is_idempotent(before: str, pii: str, after: str) -> None:
    once = mask_pii(f"{before} {pii} {after}").text
    assert mask_pii(once).text == once
    assert find_pii(once) == []


@settings(max_examples=100, deadline=None)
@given(_SAFE_TEXT, _phones(), _SAFE_TEXT)
def test_no_full_phone_survives(before: str, phone: str, after: str) -> None:
    # "Rp 628110000000" is an amount of money, not a phone number: digits right after a
    # currency word are never masked (see test_text_without_pii_is_never_changed).
    assume(not before.rstrip().casefold().endswith(("rp", "rp.", "idr")))
    masked = mask_pii(f"{before} {phone} {after}").text
    assert phone not in masked
    digits = "".join(c for c in phone if c.isdigit())
    national = "0" + digits[2:] if digits.startswith("62") else digits
    assert national not in "".join(c for c in masked if c.isdigit() or c == "*")


@settings(max_examples=100, deadline=None)
@given(_SAFE_TEXT, _niks(), _SAFE_TEXT)
def test_no_full_nik_survives(before: str, nik: str, after: str) -> None:
    masked = mask_pii(f"{before} NIK {nik} {after}").text
    assert nik not in masked
    assert f"NIK {nik[:4]}********{nik[-4:]}" in masked


@settings(max_examples=100, deadline=None)
@given(_SAFE_TEXT, _EMAILS, _SAFE_TEXT)
def test_no_full_email_survives(before: str, email: str, after: str) -> None:
    masked = mask_pii(f"{before} {email} {after}").text
    assert email not in masked
    assert f"{email[0]}***@{email.split('@')[1]}" in masked


@st.composite
def _bank_accounts(draw: st.DrawFn) -> tuple[str, str]:
    """A bank word and an account number of 10-16 digits as written (grouped or not)."""
    digits = draw(st.text("0123456789", min_size=10, max_size=16))
    assume(len(set(digits)) > 1)
    cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=3)))
    sep = draw(st.sampled_from(["", " ", "-", "."]))
    parts = [digits[a:b] for a, b in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    word = draw(st.sampled_from(["rek", "no rek", "rekening", "norek BCA", "BRI", "Mandiri",
                                 "transfer ke", "Bank Kaltimtara", "VA"]))
    return word, (sep.join(parts) if sep else digits)


@settings(max_examples=150, deadline=None)
@given(_SAFE_TEXT, _bank_accounts(), _SAFE_TEXT)
def test_no_full_bank_account_survives(before: str, account: tuple[str, str],
                                       after: str) -> None:
    word, number = account
    masked = mask_pii(f"{before} {word} {number} {after}").text
    digits = "".join(c for c in number if c.isdigit())
    assert digits not in "".join(c for c in masked if c.isdigit() or c == "*")
    assert mask_pii(masked).text == masked  # idempotent
