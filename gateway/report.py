"""The annual complaint report each agency (OPD) owes: counts, response times, SLA compliance.

``lapor-gateway report --year YYYY --by agency|channel|region --out FILE.csv --chart FILE.png``.
Reads the central store page by page (a progress line on stderr for long runs), groups the
complaints of the year (by ``received_at``, UTC), and per group reports: complaints, answered,
median and mean response time in hours, and SLA compliance: the share of complaints answered
by their deadline among those answered or already past it.

With the lifecycle in use (``status_history`` holds events, see :func:`lifecycle_answers`):

* "answered" is the first ``answered`` (or ``closed``) status event of the complaint (its
  ``at``); a complaint without one is not answered yet;
* the deadline is the one the complaint carries for the agency's answer: ``follow_up_due``
  (5 working days after it was forwarded, holidays included, :mod:`forwarder.sla`), never
  later than ``settle_due`` (60 days after receipt).

Without lifecycle events (a store from before it), "answered" is the moment the complaint was
delivered into the central store (``stored_us``). A complaint without a ``follow_up_due``
(never forwarded) is due ``sla_working_days`` working days after receipt (Monday to Friday;
LAPOR!'s follow-up deadline is 5).
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from forwarder.db import Database
from forwarder.store import parse_utc

GROUPINGS = {"agency": "agency", "channel": "channel", "region": "region_code"}
UNASSIGNED = "(belum ditentukan)"
PAGE = 2000  # rows per query
SLA_WORKING_DAYS = 5  # LAPOR!: the agency posts its follow-up within 5 working days
CSV_COLUMNS = ("group", "complaints", "answered", "median_response_h", "mean_response_h",
               "sla_due", "sla_met", "sla_compliance_pct")

#: Statuses whose first event answers a complaint.
ANSWERING = ("answered", "closed")

#: Optional: the first answer time of complaints by id, from the lifecycle.
AnsweredSource = Callable[[list[str]], Awaitable[dict[str, datetime]]]


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One complaint as the report needs it."""

    group: str
    received: datetime
    answered: datetime | None
    due: datetime | None = None  # the answer's deadline the complaint carries, if any


@dataclass
class GroupStats:
    """What the report says about one group."""

    group: str
    complaints: int = 0
    response_h: list[float] = field(default_factory=list)
    sla_due: int = 0
    sla_met: int = 0

    def as_csv(self) -> dict[str, object]:
        answered = len(self.response_h)
        return {
            "group": self.group, "complaints": self.complaints, "answered": answered,
            "median_response_h": round(statistics.median(self.response_h), 2)
            if answered else "",
            "mean_response_h": round(statistics.fmean(self.response_h), 2) if answered else "",
            "sla_due": self.sla_due, "sla_met": self.sla_met,
            "sla_compliance_pct": round(100 * self.sla_met / self.sla_due, 1)
            if self.sla_due else "",
        }


def add_working_days(start: datetime, days: int) -> datetime:
    """``start`` plus ``days`` working days (Saturdays and Sundays do not count)."""
    moment = start
    left = days
    while left > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            left -= 1
    return moment


def summarise(rows: Iterable[ReportRow], *, now: datetime,
              sla_working_days: int = SLA_WORKING_DAYS) -> list[GroupStats]:
    """Group statistics, largest group first (then by name)."""
    groups: dict[str, GroupStats] = {}
    for row in rows:
        stats = groups.setdefault(row.group, GroupStats(row.group))
        stats.complaints += 1
        deadline = row.due or add_working_days(row.received, sla_working_days)
        if row.answered is not None:
            stats.response_h.append((row.answered - row.received).total_seconds() / 3600)
            stats.sla_due += 1
            stats.sla_met += row.answered <= deadline
        elif now > deadline:
            stats.sla_due += 1
    return sorted(groups.values(), key=lambda g: (-g.complaints, g.group))


def total(stats: list[GroupStats]) -> GroupStats:
    """All groups together."""
    whole = GroupStats("TOTAL")
    for group in stats:
        whole.complaints += group.complaints
        whole.response_h.extend(group.response_h)
        whole.sla_due += group.sla_due
        whole.sla_met += group.sla_met
    return whole


class Progress:
    """A one-line progress indicator on a stream (redrawn at most every 0.2 s)."""

    def __init__(self, total_rows: int, stream: TextIO | None = None) -> None:
        self._total = max(total_rows, 1)
        self._stream = stream or sys.stderr
        self._done = 0
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._drawn >= 0.2 or self._done >= self._total:
            self._drawn = now
            width = 30
            filled = int(width * min(self._done, self._total) / self._total)
            self._stream.write(f"\rreport [{'#' * filled}{'.' * (width - filled)}] "
                               f"{self._done}/{self._total}")
            self._stream.flush()

    def close(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


async def lifecycle_answers(db: Database) -> AnsweredSource | None:
    """The first ``answered``/``closed`` event time of complaints from ``status_history``,
    or None when the store has no lifecycle events at all (answers then mean delivery)."""
    if await db.fetchrow("SELECT 1 FROM status_history LIMIT 1") is None:
        return None

    async def answers(ids: list[str]) -> dict[str, datetime]:
        if not ids:
            return {}
        marks = ", ".join(f"${i}" for i in range(len(ANSWERING) + 1, len(ids) + len(ANSWERING) + 1))
        rows = await db.fetch(
            "SELECT complaint_id, MIN(at) FROM status_history WHERE status IN ($1, $2)"
            f" AND complaint_id IN ({marks}) GROUP BY complaint_id", *ANSWERING, *ids)
        return {str(cid): parse_utc(str(at)) for cid, at in rows}

    return answers


async def read_rows(db: Database, year: int, by: str,
                    answered: AnsweredSource | None = None,
                    progress_stream: TextIO | None = None) -> list[ReportRow]:
    """The complaints received in ``year`` (UTC), grouped ``by`` agency|channel|region;
    answered as ``answered`` says (see :func:`lifecycle_answers`), else when delivered."""
    column = GROUPINGS[by]
    start, end = f"{year:04d}-01-01", f"{year + 1:04d}-01-01"
    count = await db.fetchrow(
        "SELECT COUNT(*) FROM complaints WHERE received_at >= $1 AND received_at < $2",
        start, end)
    progress = Progress(int(count[0]) if count else 0, progress_stream)
    rows: list[ReportRow] = []
    last = (start, "")
    try:
        while True:
            page = await db.fetch(
                f"SELECT received_at, id, {column}, stored_us, follow_up_due, settle_due"
                " FROM complaints WHERE (received_at > $1 OR (received_at = $1 AND id > $2))"
                " AND received_at < $3 ORDER BY received_at, id LIMIT $4",
                last[0], last[1], end, PAGE)
            answers = await answered([str(r[1]) for r in page]) if answered else {}
            for received_at, cid, group, stored_us, follow_up_due, settle_due in page:
                delivered = datetime.fromtimestamp(int(stored_us) / 1_000_000, UTC) \
                    if stored_us is not None else None
                dues = [parse_utc(str(d)) for d in (follow_up_due, settle_due) if d]
                rows.append(ReportRow(
                    str(group) if group else UNASSIGNED, parse_utc(str(received_at)),
                    answers.get(str(cid)) if answered else delivered,
                    min(dues) if follow_up_due else None))
            progress.advance(len(page))
            if len(page) < PAGE:
                return rows
            last = (str(page[-1][0]), str(page[-1][1]))
    finally:
        progress.close()


def write_csv(stats: list[GroupStats], out: TextIO) -> None:
    """One line per group, then ``TOTAL``."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for group in [*stats, total(stats)]:
        writer.writerow(group.as_csv())


def write_chart(stats: list[GroupStats], path: Path, *, year: int, by: str) -> None:
    """A PNG bar chart: complaints per group, with SLA compliance on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = stats[:20]
    names = [s.group[:28] for s in shown]
    figure, axis = plt.subplots(figsize=(10, 5.5), dpi=100)
    try:
        axis.bar(names, [s.complaints for s in shown], color="#b3261e")
        axis.set_ylabel("Jumlah pengaduan / complaints")
        axis.set_title(f"Laporan tahunan {year} per {by}")
        axis.tick_params(axis="x", labelrotation=45)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")
        sla = axis.twinx()
        sla.plot(names, [100 * s.sla_met / s.sla_due if s.sla_due else float("nan")
                         for s in shown], "o-", color="#1a7f37")
        sla.set_ylim(0, 105)
        sla.set_ylabel("Kepatuhan SLA / SLA compliance (%)")
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)

