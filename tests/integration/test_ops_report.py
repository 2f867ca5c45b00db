"""The annual report against PostgreSQL (the production store) on the known data sets."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from pathlib import Path

from tests.integration.support import PgDatabase
from tests.unit.test_report import assert_lifecycle_report, seed_known_data, seed_lifecycle_data


async def report(tmp_path: Path, pg: PgDatabase, by: str) -> str:
    """``lapor-gateway report --year 2026 --by BY`` on ``pg``: the CSV it wrote."""
    out = tmp_path / "laporan.csv"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "report", "--year", "2026",
                         "--by", by, "--out", str(out)],
        env={"LAPOR_STORE__URL": pg.url, "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return out.read_text()


async def test_report_on_postgresql(tmp_path: Path, pg: PgDatabase) -> None:
    await seed_known_data(pg.url)
    rows = {r["group"]: r for r in csv.DictReader((await report(tmp_path, pg,
                                                                 "region")).splitlines())}
    assert rows["64.72"]["complaints"] == "5"
    assert rows["64.72"]["sla_compliance_pct"] == "80.0"
    assert rows["64.72"]["mean_response_h"] == "67.8"  # (2 + 143 + 192 + 1 + 1) / 5


async def test_report_with_the_lifecycle_on_postgresql(tmp_path: Path, pg: PgDatabase) -> None:
    await seed_lifecycle_data(pg.url)
    assert_lifecycle_report(await report(tmp_path, pg, "agency"))
