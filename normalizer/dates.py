"""The incident date (tanggal kejadian) from what the citizen wrote, relative to when we got it.

"Lampu mati sejak 3 hari yang lalu", "kemarin sore", "senin kemarin", "tgl 3 Nov",
"03/11/2026": :func:`find_incident_date` reads these relative to the received time *in local
time* (WITA, UTC+8, by default: a message received at 23:30 UTC on the 20th was written on the
21st in Samarinda) and returns the date with the phrase and rule that gave it, or None when
unsure. It never returns a future date: a date after the received day is ignored, and a date
without a year is the most recent one not in the future.

When a text holds several dates, the earliest wins: "jalan rusak sudah 3 bulan, kemarin ada
yang jatuh" is a complaint about a road broken three months ago. Approximate phrases say so in
``precision`` ("2 minggu lalu" is ``week``, "bulan lalu" is ``month``); vague ones ("beberapa
hari", "tahun lalu", "dulu") give nothing.

Fast regular expressions handle the common phrases; ``dateparser`` (slow, about a millisecond
a call and more on first use) is tried only on a short phrase after *tanggal*/*tgl*/*pada*/
*sejak* that the expressions could not read. Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from calendar import monthrange
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Literal

#: Kalimantan Timur's time zone (Waktu Indonesia Tengah, no daylight saving).
WITA = timezone(timedelta(hours=8), "WITA")
#: Older than this is more likely a misreading than an incident someone reports now.
MAX_AGE_DAYS = 5 * 366
#: Local hour from which "tadi malam"/"semalam" means this evening rather than last night.
EVENING_HOUR = 18

Precision = Literal["day", "week", "month"]


@dataclass(frozen=True, slots=True)
class DateMatch:
    """An incident date and how it was read."""

    day: date
    precision: Precision
    rule: str  # which reading produced it, e.g. "relative.days_ago" or "dateparser"
    matched_text: str  # the phrase in the (lower-cased) text


MONTHS: dict[str, int] = {
    "januari": 1, "jan": 1, "january": 1, "februari": 2, "feb": 2, "pebruari": 2, "peb": 2,
    "february": 2, "maret": 3, "mar": 3, "march": 3, "april": 4, "apr": 4, "mei": 5, "may": 5,
    "juni": 6, "jun": 6, "june": 6, "juli": 7, "jul": 7, "july": 7, "agustus": 8, "agu": 8,
    "agt": 8, "agus": 8, "aug": 8, "august": 8, "september": 9, "sep": 9, "sept": 9,
    "oktober": 10, "okt": 10, "oct": 10, "october": 10, "november": 11, "nov": 11, "nop": 11,
    "nopember": 11, "desember": 12, "des": 12, "dec": 12, "december": 12,
}
WEEKDAYS: dict[str, int] = {
    "senin": 0, "selasa": 1, "rabu": 2, "kamis": 3, "jumat": 4, "jum at": 4, "sabtu": 5,
    "minggu": 6, "ahad": 6,
}
NUMBER_WORDS: dict[str, int] = {
    "satu": 1, "se": 1, "dua": 2, "tiga": 3, "empat": 4, "lima": 5, "enam": 6, "tujuh": 7,
    "delapan": 8, "sembilan": 9, "sepuluh": 10, "sebelas": 11, "dua belas": 12,
    "tiga belas": 13, "empat belas": 14, "lima belas": 15, "dua puluh": 20,
}

_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY = "senin|selasa|rabu|kamis|jum ?at|sabtu|minggu|ahad"
_NUM = r"\d{1,3}|" + "|".join(sorted((k for k in NUMBER_WORDS if k != "se"), key=len,
                                     reverse=True))
_AGO = r"(?:(?:yang|yg) )?(?:lalu|lalu|yll|kebelakang|terakhir)"
_YESTERDAY = r"(?:kemarin|kemaren|kmrn|kmarin|kmren|kemrin)"
_SINCE = r"(?:sejak|sudah|udah|udh|sdh|dah|selama|hampir|sekitar|kurang lebih)"
_UNIT = r"(?P<unit>hari|hr|minggu|mgg|pekan|bulan|bln)"

_ISO = re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b")
_NUMERIC = re.compile(r"(?<![\d/.\-])(?P<d>\d{1,2})[/.\-](?P<m>\d{1,2})[/.\-](?P<y>\d{4}|\d{2})"
                      r"(?![\d/\-]|\.\d)")
_NUMERIC_NO_YEAR = re.compile(r"\b(?:tgl|tanggal|tg)\.? ?(?P<d>\d{1,2})[/\-](?P<m>\d{1,2})\b"
                              r"(?![/\-.]?\d)")
_TEXTUAL = re.compile(
    rf"\b(?P<d>\d{{1,2}})[ \-/]?(?P<mon>{_MONTH})\b\.?(?:[ \-/,]{{1,2}}(?P<y>\d{{4}}))?")
_DAY_ONLY = re.compile(r"\b(?:tgl|tanggal|tg)\.? ?(?P<d>\d{1,2})\b(?![/\-.]?\d)")
_WEEKDAY_PAST = re.compile(
    rf"\b(?:hari )?(?P<wd>{_WEEKDAY})(?: (?:pagi|siang|sore|malam))? (?:{_YESTERDAY}|{_AGO})\b")
_HARI_MINGGU = re.compile(rf"\bhari (?P<wd>minggu) (?:{_YESTERDAY}|{_AGO})\b")
_N_UNITS_AGO = re.compile(rf"\b(?P<n>{_NUM}) ?{_UNIT} {_AGO}\b")
_SE_UNIT_AGO = re.compile(rf"\bse(?P<unit>hari|minggu|pekan|bulan) {_AGO}\b")
_ABOUT = r"(?:(?:lebih dari|lebih dr|lebih|sekitar|hampir|kurang lebih) )?"
_SINCE_N_UNITS = re.compile(rf"\b{_SINCE} {_ABOUT}(?P<n>{_NUM}) ?{_UNIT}\b")
_SINCE_SE_UNIT = re.compile(rf"\b{_SINCE} (?:(?:lebih dari|hampir) )?se(?P<unit>hari|minggu|pekan"
                            r"|bulan)\b")
_N_UNITS_THESE = re.compile(rf"\b(?P<n>{_NUM}) ?{_UNIT} (?:ini|belakangan)\b")
_LAST_WEEK = re.compile(rf"\b(?:minggu|pekan) (?:{_YESTERDAY}|{_AGO})\b")
_LAST_MONTH = re.compile(rf"\bbulan (?:{_YESTERDAY}|{_AGO})\b")
_DAY_BEFORE_YESTERDAY = re.compile(rf"\b(?:{_YESTERDAY} (?:lusa|dulu)|dua hari {_AGO})\b")
_YESTERDAY_RE = re.compile(rf"\b{_YESTERDAY}(?: (?:pagi|siang|sore|malam|subuh))?\b")
_LAST_NIGHT = re.compile(r"\b(?:tadi malam|semalam|tadi malem|semalem)\b")
_TODAY = re.compile(r"\b(?:hari ini|tadi(?: (?:pagi|siang|sore|subuh))?|barusan|baru saja|"
                    r"(?:pagi|siang|sore|subuh) ini|td (?:pagi|siang|sore))\b")
_DATEPARSER_TRIGGER = re.compile(
    r"\b(?:tanggal|tgl|pada|sejak|since|on)\.? (?P<phrase>[\w/.\-]+(?: [\w/.\-]+){0,3})")


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return NUMBER_WORDS.get(word)


def _months_before(day: date, months: int) -> date:
    year, month = divmod(day.year * 12 + day.month - 1 - months, 12)
    return date(year, month + 1, min(day.day, monthrange(year, month + 1)[1]))


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _latest_not_after(today: date, month: int, day: int) -> date | None:
    """The most recent ``day``/``month`` that is not after ``today`` (this year or last)."""
    for year in (today.year, today.year - 1):
        candidate = _safe_date(year, month, day)
        if candidate is not None and candidate <= today:
            return candidate
    return None


def _prepare(text: str) -> str:
    """Lower case, NFC, apostrophes and runs of blank space simplified (dates keep / - .)."""
    text = unicodedata.normalize("NFC", text).lower().replace("'", " ").replace("’", " ")
    return re.sub(r"\s+", " ", text)


Reader = Callable[[re.Match[str], date, datetime], tuple[date, Precision] | None]


def _read_full(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
    year = int(m["y"])
    year = year + 2000 if year < 100 else year
    day = _safe_date(year, int(m["m"]), int(m["d"]))
    return (day, "day") if day is not None else None


def _read_no_year(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
    day = _latest_not_after(today, int(m["m"]), int(m["d"]))
    return (day, "day") if day is not None else None


def _read_textual(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
    month = MONTHS[m["mon"]]
    if m["y"]:
        day = _safe_date(int(m["y"]), month, int(m["d"]))
    else:
        day = _latest_not_after(today, month, int(m["d"]))
    return (day, "day") if day is not None else None


def _read_day_only(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
    """"tgl 3": the 3rd of this month, or of last month when that is still to come."""
    wanted = int(m["d"])
    for back in (0, 1):
        first = _months_before(today.replace(day=1), back)
        candidate = _safe_date(first.year, first.month, wanted)
        if candidate is not None and candidate <= today:
            return candidate, "day"
    return None


def _read_weekday(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
    """"senin kemarin": the last such weekday strictly before today."""
    weekday = WEEKDAYS[m["wd"]]
    back = (today.weekday() - weekday) % 7 or 7
    return today - timedelta(days=back), "day"


def _unit_ago(unit: str, n: int, today: date) -> tuple[date, Precision] | None:
    if n <= 0:
        return None
    if unit in ("hari", "hr"):
        return today - timedelta(days=n), "day"
    if unit in ("minggu", "mgg", "pekan"):
        return today - timedelta(weeks=n), "week"
    return _months_before(today, n), "month"


def _read_n_units(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
    n = _number(m["n"])
    return _unit_ago(m["unit"], n, today) if n is not None else None


def _read_se_unit(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
    return _unit_ago(m["unit"], 1, today)


def _fixed(days: int, precision: Precision = "day") -> Reader:
    def read(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision] | None:
        return today - timedelta(days=days), precision
    return read


def _read_last_month(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision]:
    return _months_before(today, 1), "month"


def _read_last_night(m: re.Match[str], today: date, now: datetime) -> tuple[date, Precision]:
    return (today if now.hour >= EVENING_HOUR else today - timedelta(days=1)), "day"


#: Readers in priority order: a longer phrase claims its words before a shorter one inside it
#: ("senin kemarin" before "kemarin", "2 minggu lalu" before "minggu lalu").
READERS: tuple[tuple[str, re.Pattern[str], Reader], ...] = (
    ("absolute.iso", _ISO, _read_full),
    ("absolute.numeric", _NUMERIC, _read_full),
    ("absolute.numeric_no_year", _NUMERIC_NO_YEAR, _read_no_year),
    ("absolute.textual", _TEXTUAL, _read_textual),
    ("absolute.day_of_month", _DAY_ONLY, _read_day_only),
    ("relative.weekday", _HARI_MINGGU, _read_weekday),
    ("relative.units_ago", _N_UNITS_AGO, _read_n_units),
    ("relative.units_ago", _SE_UNIT_AGO, _read_se_unit),
    ("relative.since", _SINCE_N_UNITS, _read_n_units),
    ("relative.since", _SINCE_SE_UNIT, _read_se_unit),
    ("relative.these_units", _N_UNITS_THESE, _read_n_units),
    ("relative.last_week", _LAST_WEEK, _fixed(7, "week")),
    ("relative.weekday", _WEEKDAY_PAST, _read_weekday),
    ("relative.last_month", _LAST_MONTH, _read_last_month),
    ("relative.day_before_yesterday", _DAY_BEFORE_YESTERDAY, _fixed(2)),
    ("relative.last_night", _LAST_NIGHT, _read_last_night),
    ("relative.yesterday", _YESTERDAY_RE, _fixed(1)),
    ("relative.today", _TODAY, _fixed(0)),
)


def _local(received_at: datetime, tz: tzinfo) -> datetime:
    """The received time on the local clock (a naive time is taken as local already)."""
    return received_at.astimezone(tz) if received_at.tzinfo is not None else received_at


def find_incident_dates(text: str, received_at: datetime, *, tz: tzinfo = WITA,
                        use_dateparser: bool = True) -> list[DateMatch]:
    """Every date-like phrase in ``text`` that reads as a past date (oldest first)."""
    now = _local(received_at, tz)
    today = now.date()
    oldest = today - timedelta(days=MAX_AGE_DAYS)
    prepared = _prepare(text)
    taken: list[tuple[int, int]] = []
    found: list[DateMatch] = []
    for rule, pattern, reader in READERS:
        for m in pattern.finditer(prepared):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue
            taken.append((m.start(), m.end()))
            result = reader(m, today, now)
            if result is not None and oldest <= result[0] <= today:
                found.append(DateMatch(result[0], result[1], rule, m.group(0)))
    if not found and use_dateparser:
        found.extend(_with_dateparser(prepared, now, oldest))
    return sorted(found, key=lambda d: d.day)


def find_incident_date(text: str, received_at: datetime, *, tz: tzinfo = WITA,
                       use_dateparser: bool = True) -> DateMatch | None:
    """The incident date ``text`` states relative to ``received_at`` (the earliest one), with
    the phrase and rule that gave it; None when nothing readable and past is there."""
    found = find_incident_dates(text, received_at, tz=tz, use_dateparser=use_dateparser)
    return found[0] if found else None


def incident_date(text: str, received_at: datetime, *, tz: tzinfo = WITA) -> date | None:
    """Just the date of :func:`find_incident_date`, or None."""
    match = find_incident_date(text, received_at, tz=tz)
    return match.day if match is not None else None


def _with_dateparser(prepared: str, now: datetime, oldest: date) -> list[DateMatch]:
    """Ask dateparser about short phrases after a date word that the expressions missed."""
    triggers = list(_DATEPARSER_TRIGGER.finditer(prepared))
    if not triggers:
        return []
    try:
        import dateparser  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # pragma: no cover - dateparser is a declared dependency
        return []
    settings = {
        "PREFER_DATES_FROM": "past",
        "RELATIVE_BASE": now.replace(tzinfo=None),
        "DATE_ORDER": "DMY",
        "REQUIRE_PARTS": ["day", "month"],
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    found: list[DateMatch] = []
    for m in triggers:
        words = m["phrase"].split()
        # Longest prefix first: "3 nop 2026 jam" → "3 nop 2026" parses, "jam" alone does not.
        for n in range(len(words), 0, -1):
            phrase = " ".join(words[:n])
            if not any(c.isdigit() for c in phrase):
                continue
            parsed = dateparser.parse(phrase, languages=["id"], settings=settings)
            if parsed is None:
                continue
            day = parsed.date()
            if oldest <= day <= now.date():
                found.append(DateMatch(day, "day", "dateparser", phrase))
            break
    return found
