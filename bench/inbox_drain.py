"""Webhook inbox drain: how fast a backlog of kept webhook bodies becomes complaints once the
webhooks stop (the catch-up after a peak).

Usage (from the repository root)::

    .venv/bin/python bench/inbox_drain.py                      # about 3 minutes
    .venv/bin/python bench/inbox_drain.py --before /tmp/before # and an earlier tree, same run

Starts ``lapor-gateway run`` (embedded broker, SQLite), sends signed WhatsApp webhooks as fast
as ``--concurrency`` clients can for ``--seconds`` (the gateway answers once each body is kept;
its inbox worker handles them meanwhile), then stops the load and polls ``/readyz`` until the
inbox is empty. Prints the backlog left when the load stopped and the rate it was handled at.
``--before TREE`` (``git archive COMMIT | tar -x -C TREE``) runs the same against another
source tree first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import ROOT, load, start_gateway, table

DEADLINE_S = 900.0


def measure(tree: Path, *, seconds: float, concurrency: int) -> tuple[int, int, float]:
    """(accepted, backlog when the load stopped, seconds until the inbox was empty)."""
    with tempfile.TemporaryDirectory(prefix="bench-inbox-") as tmp:
        gateway = start_gateway(Path(tmp), tree=tree)
        try:
            result = load(gateway.url + "/webhooks/whatsapp", concurrency=concurrency,
                          seconds=seconds)
            backlog = gateway.pending(("inbox",))
            started = time.monotonic()
            if not gateway.wait_idle(DEADLINE_S, queues=("inbox",)):
                raise SystemExit(f"{tree}: inbox not empty after {DEADLINE_S:.0f} s")
            return result.ok, backlog, time.monotonic() - started
        finally:
            gateway.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the load")
    parser.add_argument("--concurrency", type=int, default=64, help="load clients")
    parser.add_argument("--before", type=Path, metavar="TREE",
                        help="an earlier source tree, measured first in the same run")
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("after", ROOT)]
    rows: list[list[object]] = []
    rates = []
    for name, tree in trees:
        accepted, backlog, took = measure(tree, seconds=args.seconds,
                                          concurrency=args.concurrency)
        rates.append(backlog / took)
        rows.append([name, accepted, backlog, f"{took:.1f}", f"{rates[-1]:,.0f}"])
    if len(rates) == 2:
        rows.append(["after/before", "", "", "", f"{rates[1] / rates[0]:.2f}"])
    print(table(["tree", "accepted", "backlog", "drain s", "drained/s"], rows,
                title="Webhook inbox: backlog handled after the load stops"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
