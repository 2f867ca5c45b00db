"""``[lifecycle]``: status notifications, SLA clocks and withdrawal (issue #8)."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from config.base import Section


class LifecycleSettings(Section):
    """``[lifecycle]``: how complaints age after intake."""

    extra_holidays: list[date] = Field(
        default_factory=list,
        description="Non-working dates besides Indonesia's national public holidays (regional "
        "holidays, cuti bersama), e.g. [2026-12-24]. SLA clocks skip them.",
    )
    utc_offset_hours: int = Field(
        8, ge=7, le=9,
        description="The province's local time for working days: 7 WIB, 8 WITA (default), 9 WIT.",
    )
    withdraw_window_s: float = Field(
        3600.0, ge=0,
        description="How long after sending a complaint its reporter may withdraw it "
        "(/batal, BATAL KODE); 0 turns self-service withdrawal off.",
    )
    sla_check_interval_s: float = Field(
        300.0, gt=0,
        description="How often the sink looks for overdue complaints and publishes alerts.",
    )
