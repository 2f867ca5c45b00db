"""Incident dates from Indonesian phrases, relative to the received time in WITA."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from normalizer.dates import WITA, find_incident_date, find_incident_dates, incident_date

#: Friday 20 November 2026, 10:00 WITA.
RECEIVED = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected", "precision"), [
    ("kemarin", date(2026, 11, 19), "day"),
    ("lampunya mati kemarin sore", date(2026, 11, 19), "day"),
    ("kmrn malam", date(2026, 11, 19), "day"),
    ("tadi pagi", date(2026, 11, 20), "day"),
    ("hari ini", date(2026, 11, 20), "day"),
    ("kemarin lusa", date(2026, 11, 18), "day"),
    ("2 minggu lalu", date(2026, 11, 6), "week"),
    ("3 hari yang lalu", date(2026, 11, 17), "day"),
    ("tiga hari yg lalu", date(2026, 11, 17), "day"),
    ("seminggu yang lalu", date(2026, 11, 13), "week"),
    ("minggu lalu", date(2026, 11, 13), "week"),
    ("bulan lalu", date(2026, 10, 20), "month"),
    ("2 bulan lalu", date(2026, 9, 20), "month"),
    ("tgl 3 Nov", date(2026, 11, 3), "day"),
    ("3 November 2026", date(2026, 11, 3), "day"),
    ("tanggal 3 nopember", date(2026, 11, 3), "day"),
    ("03/11/2026", date(2026, 11, 3), "day"),
    ("3-11-26", date(2026, 11, 3), "day"),
    ("2026-11-03", date(2026, 11, 3), "day"),
    ("tgl 3-nov-2026", date(2026, 11, 3), "day"),
    ("tgl 25", date(2026, 10, 25), "day"),  # the 25th has not come yet this month
    ("tgl 25/12", date(2025, 12, 25), "day"),  # last Christmas, not next
    ("senin kemarin", date(2026, 11, 16), "day"),
    ("hari minggu kemarin", date(2026, 11, 15), "day"),
    ("jumat lalu", date(2026, 11, 13), "day"),  # said on a Friday: the Friday before
    ("sudah 3 hari", date(2026, 11, 17), "day"),
    ("udh lebih dr 5 hari", date(2026, 11, 15), "day"),
    ("sdh hampir seminggu", date(2026, 11, 13), "week"),
    ("sejak sebulan", date(2026, 10, 20), "month"),
])
def test_phrases(text: str, expected: date, precision: str) -> None:
    found = find_incident_date(text, RECEIVED)
    assert found is not None, text
    assert (found.day, found.precision) == (expected, precision)
    assert found.matched_text


@pytest.mark.parametrize("text", [
    "", "jalan rusak parah", "beberapa hari lalu", "tahun lalu", "hari senin",
    "Rp50.000 jam 14.30 RT 03/RW 05", "0812-3456-7890", "selama 3 kali",
])
def test_unsure_gives_none(text: str) -> None:
    assert find_incident_date(text, RECEIVED) is None


def test_never_a_future_date() -> None:
    assert find_incident_date("30 November 2026", RECEIVED) is None
    assert find_incident_date("tgl 30/11/2026", RECEIVED) is None
    assert find_incident_date("lusa", RECEIVED) is None
    for text in ("tgl 30", "30 Nov", "tgl 30/11"):
        found = find_incident_date(text, RECEIVED)
        assert found is not None and found.day <= RECEIVED.date()


def test_too_old_dates_are_ignored() -> None:
    assert find_incident_date("3 November 2001", RECEIVED) is None


def test_local_date_is_used() -> None:
    # 17:00 UTC on the 19th is 01:00 WITA on the 20th: "kemarin" is the 19th.
    late = datetime(2026, 11, 19, 17, 0, tzinfo=UTC)
    assert incident_date("kemarin", late) == date(2026, 11, 19)
    assert incident_date("kemarin", late, tz=UTC) == date(2026, 11, 18)


def test_last_night_depends_on_the_hour() -> None:
    evening = datetime(2026, 11, 20, 20, 0, tzinfo=WITA)
    morning = datetime(2026, 11, 20, 7, 0, tzinfo=WITA)
    assert incident_date("tadi malam", evening) == date(2026, 11, 20)
    assert incident_date("semalam", morning) == date(2026, 11, 19)


def test_naive_received_time_is_taken_as_local() -> None:
    assert incident_date("kemarin", datetime(2026, 11, 20, 1, 0)) == date(2026, 11, 19)


def test_earliest_date_wins_and_all_are_listed() -> None:
    text = "Jalan rusak sudah 3 bulan, kemarin ada yang jatuh"
    found = find_incident_dates(text, RECEIVED)
    assert [f.rule for f in found] == ["relative.since", "relative.yesterday"]
    assert incident_date(text, RECEIVED) == date(2026, 8, 20)


def test_longer_phrase_claims_its_words() -> None:
    found = find_incident_dates("senin kemarin", RECEIVED)
    assert len(found) == 1 and found[0].rule == "relative.weekday"


def test_dateparser_fallback_after_a_date_word() -> None:
    found = find_incident_date("kejadian pada 2026/11/03 pagi", RECEIVED)
    assert found is not None
    assert (found.day, found.rule) == (date(2026, 11, 3), "dateparser")
    assert find_incident_date("kejadian pada 2026/11/03", RECEIVED,
                              use_dateparser=False) is None


def test_other_time_zone() -> None:
    wib = timezone(timedelta(hours=7))
    assert incident_date("hari ini", datetime(2026, 11, 20, 23, 30, tzinfo=UTC), tz=wib) \
        == date(2026, 11, 21)
