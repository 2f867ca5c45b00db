"""SLA clocks in Indonesian working days: weekends, national holidays, extra dates, local time."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from forwarder.sla import WITA, WorkingCalendar

WIB = timezone(timedelta(hours=7), "WIB")


def wita(y: int, m: int, d: int, hh: int = 10) -> datetime:
    return datetime(y, m, d, hh, tzinfo=WITA)


def end_of(y: int, m: int, d: int) -> datetime:
    """The deadline 'end of that local day' = the next local midnight, in UTC."""
    return datetime(y, m, d, tzinfo=WITA).astimezone(UTC) + timedelta(days=1)


@pytest.mark.parametrize(("received", "days", "due"), [
    # Monday + 3 working days = end of Thursday.
    (wita(2026, 11, 23), 3, end_of(2026, 11, 26)),
    # Friday + 3 = end of Wednesday (the weekend does not count).
    (wita(2026, 11, 27), 3, end_of(2026, 12, 2)),
    # Saturday and Sunday count from Monday: + 3 = end of Wednesday.
    (wita(2026, 11, 28), 3, end_of(2026, 12, 2)),
    (wita(2026, 11, 29), 3, end_of(2026, 12, 2)),
    # Wednesday 13 May 2026 + 3: Thursday 14 May is Ascension Day -> Fri, Mon, Tue.
    (wita(2026, 5, 13), 3, end_of(2026, 5, 19)),
    # Friday 29 May 2026 + 5: Monday 1 June is Pancasila Day -> Tue 2 .. Mon 8 June.
    (wita(2026, 5, 29), 5, end_of(2026, 6, 8)),
    # Across Christmas and New Year 2026/27: Thu 24 Dec + 3 -> Mon 28, Tue 29, Wed 30.
    (wita(2026, 12, 24), 3, end_of(2026, 12, 30)),
    # Wed 30 Dec + 3: Fri 1 Jan 2027 is New Year's Day and Tue 5 Jan Isra' Mi'raj
    # -> Thu 31, Mon 4, Wed 6 January.
    (wita(2026, 12, 30), 3, end_of(2027, 1, 6)),
    # Ten working days from Fri 14 Aug 2026 over Independence Day (Mon 17) and the Prophet's
    # Birthday (Tue 25): 18-21, 24, 26-28, 31 Aug, 1 Sep.
    (wita(2026, 8, 14), 10, end_of(2026, 9, 1)),
])
def test_working_day_deadlines(received: datetime, days: int, due: datetime) -> None:
    assert WorkingCalendar().add_working_days(received, days) == due


def test_extra_configured_dates_are_skipped() -> None:
    calendar = WorkingCalendar.build([date(2026, 11, 30), date(2026, 12, 1)])
    # Friday 27 Nov + 3: Mon 30 Nov and Tue 1 Dec are extra holidays -> Wed, Thu, Fri.
    assert calendar.add_working_days(wita(2026, 11, 27), 3) == end_of(2026, 12, 4)
    assert not calendar.is_working_day(date(2026, 12, 1))
    assert WorkingCalendar().is_working_day(date(2026, 12, 1))


def test_the_day_is_judged_in_local_time() -> None:
    # Friday 27 Nov 2026 at 17:00 UTC is already Saturday 01:00 in WITA: counts from Monday.
    late_friday_utc = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)
    assert WorkingCalendar().add_working_days(late_friday_utc, 1) == end_of(2026, 11, 30)
    # In WIB (UTC+7) it is still Friday at midnight: the count starts from Friday.
    wib = WorkingCalendar(tz=WIB)
    assert wib.add_working_days(late_friday_utc, 1) == \
        datetime(2026, 12, 1, tzinfo=WIB).astimezone(UTC)


def test_settlement_counts_calendar_days_and_working_days_between() -> None:
    calendar = WorkingCalendar()
    assert calendar.add_calendar_days(wita(2026, 11, 27), 60) == end_of(2027, 1, 26)
    # 14 to 21 May 2026: Fri 15, Mon 18, Tue 19, Wed 20, Thu 21 (Thu 14 excluded anyway).
    assert calendar.working_days_between(date(2026, 5, 14), date(2026, 5, 21)) == 5
    assert calendar.working_days_between(date(2026, 5, 21), date(2026, 5, 14)) == 0
