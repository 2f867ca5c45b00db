"""SLA clocks in Indonesian working days (pure: no I/O).

LAPOR! deadlines (docs/LAPOR.md §5): an admin verifies and forwards a complaint within **3
working days** of receipt, the agency follows up within **5 working days** of being
forwarded, a complaint is closed **10 working days** after the follow-up with no reply, and
Perpres 76/2013 asks for settlement within **60 days** (calendar days) of receipt.

A working day is Monday to Friday that is neither a national public holiday (the ``holidays``
package, ``country_holidays("ID")``) nor one of the configured extra dates (regional holidays,
cuti bersama announced late). Days are judged in the province's local time (WITA by default).
A deadline of N working days after a moment is the *end* of the N-th working day after that
moment's local date, expressed as the next local midnight: a complaint received on Friday
with a 3-day clock is due at the end of Wednesday (Thursday 00:00 local), and one received on
a Saturday counts from Monday.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from enum import StrEnum

import holidays

WITA = timezone(timedelta(hours=8), "WITA")

VERIFY_DAYS = 3  # verification and forwarding by an admin (working days)
FOLLOW_UP_DAYS = 5  # the agency's follow-up after forwarding (working days)
CLOSE_DAYS = 10  # closure after a follow-up with no reply (working days)
SETTLE_DAYS = 60  # settlement after receipt (calendar days, Perpres 76/2013)


class Stage(StrEnum):
    """A clock that runs while the complaint is in certain statuses."""

    VERIFICATION = "verification"
    FOLLOW_UP = "follow_up"
    CLOSURE = "closure"
    SETTLEMENT = "settlement"


@dataclass(frozen=True)
class WorkingCalendar:
    """Working-day arithmetic for one timezone, national holidays plus ``extra`` dates."""

    tz: tzinfo = WITA
    extra: frozenset[date] = frozenset()

    @classmethod
    def build(cls, extra: Iterable[date] = (), tz: tzinfo = WITA) -> WorkingCalendar:
        return cls(tz=tz, extra=frozenset(extra))

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.extra and not _is_holiday(day)

    def add_working_days(self, moment: datetime, days: int) -> datetime:
        """The deadline ``days`` working days after ``moment`` (aware), in UTC."""
        day = moment.astimezone(self.tz).date()
        counted = 0
        while counted < days:
            day += timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
        return _midnight_after(day, self.tz)

    def add_calendar_days(self, moment: datetime, days: int) -> datetime:
        """The end of the ``days``-th calendar day after ``moment``'s local date, in UTC."""
        return _midnight_after(moment.astimezone(self.tz).date() + timedelta(days=days), self.tz)

    def working_days_between(self, start: date, end: date) -> int:
        """Working days in ``(start, end]`` (0 when ``end <= start``)."""
        count, day = 0, start
        while day < end:
            day += timedelta(days=1)
            count += self.is_working_day(day)
        return count


def _midnight_after(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tz).astimezone(UTC)


_YEARS: dict[int, holidays.HolidayBase] = {}


def _is_holiday(day: date) -> bool:
    calendar = _YEARS.get(day.year)
    if calendar is None:
        calendar = holidays.country_holidays("ID", years=day.year)
        _YEARS[day.year] = calendar
    return day in calendar
