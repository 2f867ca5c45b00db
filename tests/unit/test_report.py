"""The annual report on known data sets: counts, response times, SLA compliance, the files;
a store without lifecycle events (answered = delivered) and one with them (answered = the first
``answered``/``closed`` event, deadline = the due dates the complaint carries)."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from forwarder.db import open_database
from gateway.cli import main
from gateway.report import ReportRow, add_working_days, summarise


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# (received, delivered into the central store, agency); Monday 2 March 2026 onwards.
KNOWN = [
    ("2026-03-02T08:00:00", "2026-03-02T10:00:00", "Dinas PU"),     # 2 h, on time
    ("2026-03-06T10:00:00", "2026-03-12T09:00:00", "Dinas PU"),     # Fri -> Thu: 143 h, on time
    ("2026-03-02T08:00:00", "2026-03-10T08:00:00", "Dinas PU"),     # 192 h, due Mon 9 March: late
    ("2026-06-01T00:00:00", "2026-06-01T01:00:00", "Dinas Kesehatan"),  # 1 h
    ("2026-07-01T00:00:00", "2026-07-01T01:00:00", None),           # not routed yet: 1 h
    ("2025-12-31T23:59:59", "2026-01-01T00:10:00", "Dinas PU"),     # last year
    ("2027-01-01T00:00:00", "2027-01-01T00:10:00", "Dinas PU"),     # next year
]


def test_working_days_skip_the_weekend() -> None:
    assert add_working_days(utc("2026-03-06T10:00:00"), 5) == utc("2026-03-13T10:00:00")
    assert add_working_days(utc("2026-03-07T10:00:00"), 1) == utc("2026-03-09T10:00:00")


def test_unanswered_complaints_count_against_the_sla_only_once_due() -> None:
    rows = [ReportRow("A", utc("2026-03-02T08:00:00"), None),
            ReportRow("A", utc("2026-03-05T08:00:00"), None)]
    [stats] = summarise(rows, now=utc("2026-03-10T09:00:00"))  # the first is due, not the 2nd
    assert (stats.complaints, stats.sla_due, stats.sla_met) == (2, 1, 0)
    assert stats.as_csv()["median_response_h"] == ""


async def seed_known_data(url: str) -> None:
    db = await open_database(url, pool_size=2)
    try:
        for i, (received, stored, agency) in enumerate(KNOWN):
            stored_us = int(utc(stored).timestamp() * 1_000_000)
            await db.execute(
                "INSERT INTO complaints (id, tracking_code, channel, account, native_id,"
                " received_at, stored_us, classification, agency, region_code, payload)"
                " VALUES ($1, $2, $3, 'web', $4, $5, $6, 'pengaduan', $7, '64.72', '{}')",
                f"c{i}", f"CODE{i}", "webform" if i % 2 else "telegram", str(i),
                f"{received}.000000Z", stored_us, agency)
    finally:
        await db.close()


def test_report_command_on_a_known_data_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'lapor.db'}"
    asyncio.run(seed_known_data(url))
    monkeypatch.setenv("LAPOR_STORE__URL", url)
    out, chart = tmp_path / "laporan-2026.csv", tmp_path / "laporan-2026.png"
    assert main(["report", "--year", "2026", "--by", "agency", "--out", str(out),
                 "--chart", str(chart)]) == 0
    rows = {r["group"]: r for r in csv.DictReader(out.read_text(encoding="utf-8").splitlines())}
    assert list(rows) == ["Dinas PU", "(belum ditentukan)", "Dinas Kesehatan", "TOTAL"]
    pu = rows["Dinas PU"]
    assert (pu["complaints"], pu["answered"]) == ("3", "3")
    assert pu["median_response_h"] == "143.0"
    assert pu["mean_response_h"] == "112.33"  # (2 + 143 + 192) / 3
    assert (pu["sla_due"], pu["sla_met"], pu["sla_compliance_pct"]) == ("3", "2", "66.7")
    assert rows["TOTAL"]["complaints"] == "5"
    assert rows["TOTAL"]["median_response_h"] == "2.0"  # 1, 1, 2, 143, 192
    assert rows["TOTAL"]["sla_compliance_pct"] == "80.0"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "5/5" in capsys.readouterr().err  # the progress line reached the end

    assert main(["report", "--year", "2026", "--by", "channel"]) == 0
    by_channel = {r["group"]: r["complaints"]
                  for r in csv.DictReader(capsys.readouterr().out.splitlines())}
    assert by_channel == {"telegram": "3", "webform": "2", "TOTAL": "5"}


def iso(text: str) -> str:
    return f"{text}.000000Z"


# id: (received, agency, follow_up_due, settle_due, [(status, at), ...] in arrival order).
# Every complaint was delivered an hour after receipt: with the lifecycle, that is no answer.
LIFECYCLE = {
    "l0": ("2026-03-02T08:00:00", "Dinas PU", "2026-03-09T16:00:00", "2026-05-01T00:00:00",
           [("forwarded", "2026-03-02T09:00:00"), ("answered", "2026-03-04T08:00:00")]),
    # 216 h: past its follow-up due date; the later closure is not the first answer.
    "l1": ("2026-03-02T08:00:00", "Dinas PU", "2026-03-10T16:00:00", "2026-05-01T00:00:00",
           [("forwarded", "2026-03-03T08:00:00"), ("answered", "2026-03-11T08:00:00"),
            ("closed", "2026-03-20T08:00:00")]),
    # Closed without being forwarded (no follow-up due: 5 working days after receipt); an
    # answer that happened earlier arrived late: 12 h.
    "l2": ("2026-03-02T08:00:00", "Dinas PU", None, "2026-05-01T00:00:00",
           [("closed", "2026-03-03T08:00:00"), ("answered", "2026-03-02T20:00:00")]),
    # Forwarded, never answered, past due.
    "l3": ("2026-03-02T08:00:00", "Dinas PU", "2026-03-09T16:00:00", "2026-05-01T00:00:00",
           [("forwarded", "2026-03-02T09:00:00"), ("in_follow_up", "2026-03-03T09:00:00")]),
    "l4": ("2026-06-01T00:00:00", "Dinas Kesehatan", "2026-06-08T16:00:00",
           "2026-07-31T00:00:00",
           [("verified", "2026-06-01T01:00:00"), ("answered", "2026-06-01T05:00:00")]),
    # Forwarded so late that settlement (60 days) comes before the follow-up due date:
    # answered within the follow-up clock but after the settlement one, so late. 1512 h.
    "l5": ("2026-03-02T08:00:00", "Dinas Kesehatan", "2026-05-05T16:00:00",
           "2026-05-01T00:00:00",
           [("forwarded", "2026-04-28T08:00:00"), ("answered", "2026-05-04T08:00:00")]),
    "l6": ("2025-12-31T08:00:00", "Dinas PU", "2026-01-07T16:00:00", "2026-03-01T00:00:00",
           [("answered", "2026-01-02T08:00:00")]),  # last year
}


async def seed_lifecycle_data(url: str) -> None:
    db = await open_database(url, pool_size=2)
    try:
        for cid, (received, agency, follow_up_due, settle_due, events) in LIFECYCLE.items():
            stored_us = int((utc(received).timestamp() + 3600) * 1_000_000)
            await db.execute(
                "INSERT INTO complaints (id, tracking_code, channel, account, native_id,"
                " received_at, stored_us, classification, agency, region_code, payload,"
                " follow_up_due, settle_due)"
                " VALUES ($1, $2, 'webform', 'web', $1, $3, $4, 'pengaduan', $5, '64.72', '{}',"
                " $6, $7)",
                cid, cid.upper(), iso(received), stored_us, agency,
                iso(follow_up_due) if follow_up_due else None, iso(settle_due))
            for seq, (status, at) in enumerate(events, start=1):
                await db.execute(
                    "INSERT INTO status_history (event_id, complaint_id, seq, status, at, actor,"
                    " agency, applied, recorded_us) VALUES ($1, $2, $3, $4, $5, 'agency', $6,"
                    " $7, $8)", f"{cid}-{seq}", cid, seq, status, iso(at), agency,
                    seq == len(events) or status != "answered", stored_us + seq)
    finally:
        await db.close()


def assert_lifecycle_report(csv_text: str) -> None:
    rows = {r["group"]: r for r in csv.DictReader(csv_text.splitlines())}
    assert list(rows) == ["Dinas PU", "Dinas Kesehatan", "TOTAL"]
    pu, health, whole = rows["Dinas PU"], rows["Dinas Kesehatan"], rows["TOTAL"]
    assert (pu["complaints"], pu["answered"]) == ("4", "3")
    assert (pu["median_response_h"], pu["mean_response_h"]) == ("48.0", "92.0")  # 48, 216, 12
    assert (pu["sla_due"], pu["sla_met"], pu["sla_compliance_pct"]) == ("4", "2", "50.0")
    assert (health["complaints"], health["answered"]) == ("2", "2")
    assert health["median_response_h"] == "758.5"  # 5 and 1512
    assert (health["sla_due"], health["sla_met"]) == ("2", "1")
    assert (whole["complaints"], whole["answered"], whole["median_response_h"]) == (
        "6", "5", "48.0")
    assert whole["mean_response_h"] == "358.6"  # (5 + 12 + 48 + 216 + 1512) / 5
    assert (whole["sla_due"], whole["sla_met"], whole["sla_compliance_pct"]) == ("6", "3", "50.0")


def test_report_with_the_lifecycle_uses_first_answers_and_due_dates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'lapor.db'}"
    asyncio.run(seed_lifecycle_data(url))
    monkeypatch.setenv("LAPOR_STORE__URL", url)
    out = tmp_path / "laporan-2026.csv"
    assert main(["report", "--year", "2026", "--by", "agency", "--out", str(out)]) == 0
    assert_lifecycle_report(out.read_text(encoding="utf-8"))
