"""The annual report against PostgreSQL (the production store) on the known data set."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from pathlib import Path

from tests.integration.support import PgDatabase
from tests.unit.test_report import seed_known_data


async def test_report_on_postgresql(tmp_path: Path, pg: PgDatabase) -> None:
    await seed_known_data(pg.url)
    out = tmp_path / "laporan.csv"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway.cli", "report", "--year", "2026",
                         "--by", "region", "--out", str(out)],
        env={"LAPOR_STORE__URL": pg.url, "PATH": "/usr/bin:/bin"}, capture_output=True,
        text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = {r["group"]: r for r in csv.DictReader(out.read_text().splitlines())}
    assert rows["64.72"]["complaints"] == "5"
    assert rows["64.72"]["sla_compliance_pct"] == "80.0"
    assert rows["64.72"]["mean_response_h"] == "67.8"  # (2 + 143 + 192 + 1 + 1) / 5
