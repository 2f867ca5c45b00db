"""Find and mask personal data (PII) in free text: NIK, phone numbers, e-mails, bank accounts.

Citizens write their NIK, WhatsApp number or account number into the complaint body; the body
goes to agencies and, unless the complaint is confidential, to the public. :func:`mask_pii`
replaces each finding with a masked form that keeps a hint for the officer handling it and
nothing that identifies the person. The masking style is the same for every kind:

=============  ==========================  =================================================
kind           example                     masked
=============  ==========================  =================================================
``nik``        ``6472031505900001``        ``6472********0001`` (first 4 = kab/kota code)
``phone``      ``+62 812-3456-7890``       ``0812****7890`` (national form; first 4 = operator)
``email``      ``siti.aminah@gmail.com``   ``s***@gmail.com`` (first letter, domain)
``bank``       ``BCA 123 456 7890``        ``******7890`` (last 4 only)
=============  ==========================  =================================================

Digits always become ``*``, one per hidden digit, so a masked number can never be taken for a
real one again: masking is idempotent. Ordinary numbers are never masked: dates
(``03/11/2026``), money (``Rp50.000``, ``1.500.000``), house numbers, ``RT 03/RW 05``, times,
kilometre posts, short codes. Plausibility checks keep it that way: a NIK has a real province
code, a day of 01–31 (41–71 for women) and a month of 01–12; a phone is an Indonesian mobile
(``08…``/``+628…``/``628…``, 10–13 digits) or a landline right after a word like *telp*; a
bank account has 10–16 digits and a word like *rek*, *rekening* or a bank name just before it.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["nik", "phone", "email", "bank"]

#: Kemendagri province codes (the first two digits of a NIK).
PROVINCE_CODES = frozenset({
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "31", "32", "33", "34", "35",
    "36", "51", "52", "53", "61", "62", "63", "64", "65", "71", "72", "73", "74", "75", "76",
    "81", "82", "91", "92", "93", "94", "95", "96", "97",
})
#: How far (characters) before a number a context word may stand ("no rek BCA a.n. Siti: ...").
CONTEXT_WINDOW = 40
#: Digits kept in clear at the start of a masked NIK or phone, and at the end of every number.
KEEP_HEAD = 4
KEEP_TAIL = 4

_SEP = r"[ .\-]"
#: A number starts here, not in the middle of another one ("Rp1.594.080.000" holds no phone).
_START = r"(?<![\d*])(?<!\d[.,/\-])"
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
#: Indonesian mobile numbers: +62 / 62 / 0, then 8xx, then 6–10 more digits, with single
#: spaces, dots or hyphens anywhere between digits and optional brackets around the prefix.
_MOBILE = re.compile(
    rf"{_START}(?:\(?\+62\)?{_SEP}?|\b62{_SEP}?|\b0)\(?8\d{{1,2}}\)?(?:{_SEP}?\d){{6,10}}(?!\d)")
#: Landlines only after a contact word, e.g. "telp (0541) 741234", "hub 0542-7201234".
_LANDLINE = re.compile(
    rf"(?:\b(?:telp|tlp|telepon|telpon|phone|hp|wa|whatsapp|hub|hubungi|kontak|fax|nomor)"
    rf"\b\.?:?\s*)"
    rf"((?:\(?\+62\)?{_SEP}?|\(?0)[2-79]\d{{1,2}}\)?{_SEP}?\d(?:{_SEP}?\d){{4,7}})(?!\d)",
    re.IGNORECASE)
_NIK = re.compile(rf"{_START}\d{{4}}{_SEP}?\d{{2}}{_SEP}?\d{{6}}{_SEP}?\d{{4}}(?!\d)"
                  rf"|{_START}\d{{6}}{_SEP}\d{{6}}{_SEP}\d{{4}}(?!\d)"
                  rf"|{_START}\d{{4}}{_SEP}\d{{4}}{_SEP}\d{{4}}{_SEP}\d{{4}}(?!\d)")
_NIK_CONTEXT = re.compile(r"\b(nik|ktp|e-?ktp|kk|kartu keluarga|no\.? induk)\b", re.IGNORECASE)
#: 10–16 digits, possibly grouped (BRI 0123-01-012345-50-1, Mandiri 137-00-1234567-8).
_DIGIT_RUN = re.compile(rf"{_START}(?<![.,])\d(?:{_SEP}?\d){{9,15}}(?![\d*]|[.,]\d)")
_BANK_CONTEXT = re.compile(
    r"\b(rek|rekening|norek|no\.? ?rek|nomor rekening|account|acc|va|virtual account|transfer|"
    r"tf|bca|bri|bni|mandiri|bsi|btn|cimb|danamon|permata|bankaltimtara|bpd kaltim|bank|"
    r"ovo|gopay|dana|shopeepay|linkaja)\b",
    re.IGNORECASE)
_MONEY_BEFORE = re.compile(r"(?:rp\.?|idr|usd)\s*$", re.IGNORECASE)
_THOUSANDS = re.compile(r"^[1-9]\d{0,2}(?:\.\d{3})+$")


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of PII: its kind and where it is in the *original* text (``text[start:end]``).
    The value itself is not kept, so findings can be logged."""

    kind: Kind
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class MaskResult:
    """The masked text and what was masked (positions refer to the original text)."""

    text: str
    found: tuple[Finding, ...]


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _plausible_nik(digits: str) -> bool:
    """A real province, non-zero kab/kec, a valid day (+40 for women) and month, serial > 0."""
    if len(digits) != 16 or digits[:2] not in PROVINCE_CODES:
        return False
    if digits[2:4] == "00" or digits[4:6] == "00" or digits[12:] == "0000":
        return False
    day, month = int(digits[6:8]), int(digits[8:10])
    return (1 <= day <= 31 or 41 <= day <= 71) and 1 <= month <= 12


def _context_before(text: str, start: int, pattern: re.Pattern[str]) -> bool:
    window = text[max(0, start - CONTEXT_WINDOW):start]
    window = re.split(r"[\n;]|\.\s", window)[-1]  # stay in the same sentence
    return pattern.search(window) is not None


def _mobile_national(digits: str) -> str | None:
    """The national form (``08…``) of a mobile number's digits, or None if not plausible."""
    if digits.startswith("62"):
        digits = "0" + digits[2:]
    if digits.startswith("08") and 10 <= len(digits) <= 13:
        return digits
    return None


def _scan(pattern: re.Pattern[str], text: str,
          accept: Callable[[re.Match[str]], bool]) -> list[re.Match[str]]:
    """The matches of ``pattern`` that ``accept`` takes, without overlaps. A match turned down
    is retried one character further on, so a phone right after a money amount is not
    swallowed by it."""
    taken: list[re.Match[str]] = []
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        if accept(m):
            taken.append(m)
            pos = m.end()
        else:
            pos = m.start() + 1
    return taken


def find_pii(text: str) -> list[Finding]:
    """Every piece of PII in ``text``, in order, without overlaps (e-mail, then NIK, phone and
    bank account, in that priority where they overlap)."""
    found: list[Finding] = []

    def free(start: int, end: int) -> bool:
        return all(end <= f.start or start >= f.end for f in found)

    for m in _EMAIL.finditer(text):
        found.append(Finding("email", m.start(), m.end()))

    def nik(m: re.Match[str]) -> bool:
        return free(m.start(), m.end()) and (
            _plausible_nik(_digits(m.group())) or _context_before(text, m.start(), _NIK_CONTEXT))

    found.extend(Finding("nik", m.start(), m.end()) for m in _scan(_NIK, text, nik))

    def mobile(m: re.Match[str]) -> bool:
        money = m.group().startswith("6") and _MONEY_BEFORE.search(text[:m.start()])
        return free(m.start(), m.end()) and bool(_mobile_national(_digits(m.group()))) \
            and not money

    found.extend(Finding("phone", m.start(), m.end()) for m in _scan(_MOBILE, text, mobile))
    for m in _LANDLINE.finditer(text):
        if free(m.start(1), m.end(1)):
            found.append(Finding("phone", m.start(1), m.end(1)))

    def bank(m: re.Match[str]) -> bool:
        return (free(m.start(), m.end()) and not _THOUSANDS.match(m.group())
                and not _MONEY_BEFORE.search(text[:m.start()])
                and _context_before(text, m.start(), _BANK_CONTEXT))

    found.extend(Finding("bank", m.start(), m.end()) for m in _scan(_DIGIT_RUN, text, bank))
    return sorted(found, key=lambda f: f.start)


def _mask(kind: Kind, value: str) -> str:
    """The masked form of one finding (see the module docstring for the style)."""
    if kind == "email":
        local, _, domain = value.partition("@")
        return f"{local[0]}***@{domain}"
    digits = _digits(value)
    if kind == "phone":
        national = _mobile_national(digits)
        if national is None:  # a landline: keep its written area code
            national = "0" + digits[2:] if digits.startswith("62") else digits
        digits = national
    head = 0 if kind == "bank" else KEEP_HEAD
    hidden = len(digits) - head - KEEP_TAIL
    return digits[:head] + "*" * hidden + digits[len(digits) - KEEP_TAIL:]


def mask_pii(text: str) -> MaskResult:
    """``text`` with every NIK, phone number, e-mail address and bank account masked.

    Text without PII is returned unchanged; masking a masked text changes nothing.
    """
    found = find_pii(text)
    if not found:
        return MaskResult(text, ())
    parts: list[str] = []
    cursor = 0
    for finding in found:
        parts.append(text[cursor:finding.start])
        parts.append(_mask(finding.kind, text[finding.start:finding.end]))
        cursor = finding.end
    parts.append(text[cursor:])
    return MaskResult("".join(parts), tuple(found))
