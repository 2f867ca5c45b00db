"""Webhook inbox drain: how fast a backlog of kept webhook bodies becomes complaints once the
webhooks stop (the catch-up after a peak).

Usage (from the repository root)::

    .venv/bin/python bench/inbox_drain.py                      # about 3 minutes
    .venv/bin/python bench/inbox_drain.py --before /tmp/before # and an earlier tree, same run
    .venv/bin/python bench/inbox_drain.py --rate 260 --seconds 120  # a steady load instead

Starts ``lapor-gateway run`` (embedded broker, SQLite), sends signed WhatsApp webhooks as fast
as ``--concurrency`` clients can for ``--seconds`` (the gateway answers once each body is kept;
its inbox worker handles them meanwhile), then stops the load and polls ``/readyz`` until the
inbox is empty. Prints the backlog left when the load stopped and the rate it was handled at.
``--rate R`` sends them open loop at R per second instead (a steady load, not a burst) and
also prints how many complaints/s the worker handled while webhooks kept arriving: what it
keeps up with under that load. ``--before TREE`` (``git archive COMMIT | tar -x -C TREE``)
runs the same against another source tree first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import ROOT, load, start_gateway, table

DEADLINE_S = 900.0


def measure(tree: Path, *, seconds: float, concurrency: int, rate: float
            ) -> tuple[int, int, float, float]:
    """(accepted, backlog when the load stopped, seconds the load took, seconds until the
    inbox was empty)."""
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
        gateway = start_gateway(Path(tmp), tree=tree)
        try:
            result = load(gateway.url + "/webhooks/whatsapp", concurrency=concurrency,
                          seconds=seconds, rate=rate)
            backlog = gateway.pending(("inbox",))
            started = time.monotonic()
            if not gateway.wait_idle(DEADLINE_S, queues=("inbox",)):
                raise SystemExit(f"{tree}: inbox not empty after {DEADLINE_S:.0f} s")
            return result.ok, backlog, result.seconds, time.monotonic() - started
        finally:
            gateway.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the load")
    parser.add_argument("--concurrency", type=int, default=64, help="load clients")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="webhooks per second, open loop (default: as fast as they can)")
    parser.add_argument("--before", type=Path, metavar="TREE",
                        help="an earlier source tree, measured first in the same run")
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("after", ROOT)]
    rows: list[list[object]] = []
    rates, during = [], []
    for name, tree in trees:
        accepted, backlog, loaded, took = measure(tree, seconds=args.seconds,
                                                  concurrency=args.concurrency, rate=args.rate)
        rates.append(backlog / took)
        during.append((accepted - backlog) / loaded)
        rows.append([name, accepted, f"{during[-1]:,.0f}", backlog, f"{took:.1f}",
                     f"{rates[-1]:,.0f}"])
    if len(rates) == 2:
        rows.append(["after/before", "", f"{during[1] / during[0]:.2f}", "", "",
                     f"{rates[1] / rates[0]:.2f}"])
    load_kind = f"{args.rate:,.0f} webhooks/s" if args.rate else "as fast as they can"
    print(table(["tree", "accepted", "handled/s during load", "backlog", "drain s",
                 "drained/s"], rows,
                title=f"Webhook inbox: {args.seconds:.0f} s of webhooks ({load_kind}), "
                      "then the backlog handled after the load stops"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
