"""The annual report on a known data set: counts, response times, SLA compliance, the files."""

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
