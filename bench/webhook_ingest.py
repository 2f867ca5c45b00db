"""WhatsApp webhook intake: the gateway's durable accept rate against a bare aiohttp handler.

Usage (from the repository root)::

    .venv/bin/python bench/webhook_ingest.py                     # full run (about 3 minutes)
    .venv/bin/python bench/webhook_ingest.py --seconds 4 --levels 4,32   # quick look
    .venv/bin/python bench/webhook_ingest.py --uvloop             # the gateway on uvloop
    git archive COMMIT | tar -x -C /tmp/before                 # then, in the same run:
    .venv/bin/python bench/webhook_ingest.py --before /tmp/before  # before/after columns

Starts ``lapor-gateway run`` (embedded broker, SQLite, the WhatsApp webhook on) and, beside it
in the same run, ``bench/_bare.py``: an aiohttp handler that only reads the body and answers
200. Both get the same load from client processes: signed WhatsApp text-message webhooks, each
with a new wamid, so every request is a new complaint the gateway must make durable before it
answers 200.

1. Closed loop at rising concurrency: accepted/s and p50/p99 for both, and the ratio.
2. Open loop at half of the gateway's peak rate, for both: p50/p99 (latency from the scheduled
   send, so queueing is counted).

Goals (issue #11): gateway accepted/s >= 40% of the bare handler's at the same concurrency
(best level), and p99 <= 25 ms at half of the gateway's peak rate.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import LoadResult, load, start_bare, start_gateway, table

GOAL_RATIO = 0.40
GOAL_P99_MS = 25.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,8,32,128",
                        help="closed-loop concurrency levels (comma-separated)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--uvloop", action="store_true", help="run the gateway with --uvloop")
    parser.add_argument("--before", type=Path, metavar="TREE",
                        help="also load a gateway run from this source tree (an earlier "
                             "commit): its accepted/s as a ratio to this tree's")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    before_rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        data_dir = Path(tmp)
        gateway = start_gateway(data_dir / "gateway", args=["--uvloop"] if args.uvloop else [])
        gateway_url = gateway.url
        bare, bare_url = start_bare(data_dir)
        old = start_gateway(data_dir / "before", tree=args.before) if args.before else None
        old_url = old.url if old is not None else ""
        try:
            rows, peak = [], 0.0
            for index, level in enumerate(levels):
                b = load(bare_url + "/webhooks/whatsapp", concurrency=level,
                         seconds=args.seconds, processes=args.processes)
                # Each gateway starts a phase with an empty outbox; with --before the two
                # trees take turns going first.
                if old is not None and index % 2:
                    old.wait_idle()
                    o = load(old_url + "/webhooks/whatsapp", concurrency=level,
                             seconds=args.seconds, processes=args.processes)
                gateway.wait_idle()
                g = load(gateway_url + "/webhooks/whatsapp", concurrency=level,
                         seconds=args.seconds, processes=args.processes)
                if old is not None and not index % 2:
                    old.wait_idle()
                    o = load(old_url + "/webhooks/whatsapp", concurrency=level,
                             seconds=args.seconds, processes=args.processes)
                peak = max(peak, g.rate)
                rows.append(_row(f"closed c={level}", g, b))
                if old is not None:
                    before_rows.append([f"closed c={level}", o.rate, o.p(99), g.rate, g.p(99),
                                        round(g.rate / o.rate, 2) if o.rate else 0.0])
            half = peak / 2
            concurrency = max(levels)
            b = load(bare_url + "/webhooks/whatsapp", concurrency=concurrency,
                     seconds=args.seconds, rate=half, processes=args.processes)
            gateway.wait_idle()
            g = load(gateway_url + "/webhooks/whatsapp", concurrency=concurrency,
                     seconds=args.seconds, rate=half, processes=args.processes)
            rows.append(_row(f"open {half:,.0f}/s", g, b))
        finally:
            gateway.stop()
            bare.stop()
            if old is not None:
                old.stop()
    print(table(["phase", "gw acc/s", "gw p50 ms", "gw p99 ms", "gw err", "bare acc/s",
                 "bare p50 ms", "bare p99 ms", "ratio"], rows,
                title="WhatsApp webhook intake: gateway (durable) vs bare aiohttp handler"))
    if before_rows:
        print()
        print(table(["phase", "before acc/s", "before p99 ms", "after acc/s", "after p99 ms",
                     "after/before"], before_rows,
                    title=f"Before ({args.before}) and after (this tree), same run"))
    best = max(r[-1] for r in rows[:-1])
    p99 = rows[-1][3]
    print()
    print(f"best accept ratio {best:.2f} (goal >= {GOAL_RATIO:.2f}): "
          f"{'met' if best >= GOAL_RATIO else 'MISSED'}")
    print(f"p99 at half peak ({half:,.0f}/s) {p99:.1f} ms (goal <= {GOAL_P99_MS:.0f} ms): "
          f"{'met' if p99 <= GOAL_P99_MS else 'MISSED'}")
    return 0


def _row(phase: str, g: LoadResult, b: LoadResult) -> list[object]:
    return [phase, g.rate, g.p(50), g.p(99), g.errors, b.rate, b.p(50), b.p(99),
            round(g.rate / b.rate, 3) if b.rate else 0.0]


if __name__ == "__main__":
    raise SystemExit(main())
