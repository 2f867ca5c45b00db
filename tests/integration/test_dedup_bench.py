"""The dedup benches run, and the quality targets hold on the labelled evaluation set."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quality_targets_are_met() -> None:
    out = run("bench/dedup_quality.py", "--split", "all", "--check")
    assert re.search(r"duplicate precision \(intake\)\s+\d\.\d+\s+0\.95\s+ok", out), out
    assert "MISSED" not in out
    assert int(re.search(r"rows (\d+)", out).group(1)) >= 200  # type: ignore[union-attr]


def test_scale_bench_fills_the_real_store_and_measures() -> None:
    out = run("bench/dedup_scale.py", "--count", "3000", "--baseline", "1000", "--lookups",
              "100", "--pool", "100")
    rows = re.findall(r"^\s+([\d,]+)\s+[\d.]+\s+([\d,]+)\s", out, re.MULTILINE)
    assert [r[0] for r in rows] == ["0", "1,000", "3,000"], out
    assert all(int(r[1].replace(",", "")) > 0 for r in rows)
